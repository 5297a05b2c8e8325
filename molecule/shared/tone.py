# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Make a test tone, and find the dominant frequency and level of a recording.

    tone.py make OUT.raw [--freq 1000] [--rate 48000] [--seconds 3]   s16le mono, -6 dBFS
    tone.py analyse REC.wav                                            JSON on stdout

The analysis takes the loudest 0.5 s of the recording (by RMS over 0.1 s
blocks), scans it with the Goertzel algorithm every 20 Hz from 20 Hz to
Nyquist on a 0.05 s window, then every 1 Hz within 40 Hz of the coarse peak
on the whole 0.5 s. Standard library only (no numpy): it runs wherever
molecule's controller runs.
"""

from __future__ import annotations

import argparse
import array
import json
import math
import sys
import wave


def make(path: str, freq: float, rate: int, seconds: float, amplitude: float = 0.5) -> None:
    samples = array.array(
        "h", (int(amplitude * 32767 * math.sin(2 * math.pi * freq * i / rate)) for i in range(int(rate * seconds)))
    )
    if sys.byteorder != "little":
        samples.byteswap()
    with open(path, "wb") as fh:
        fh.write(samples.tobytes())


def read_mono(path: str) -> tuple[list[float], int]:
    """The first channel of a 16-bit PCM WAV file, as floats in [-1, 1), and its rate."""
    with wave.open(path, "rb") as w:
        if w.getsampwidth() != 2:
            raise SystemExit(f"{path}: {8 * w.getsampwidth()}-bit samples, expected 16-bit")
        rate, channels = w.getframerate(), w.getnchannels()
        data = array.array("h", w.readframes(w.getnframes()))
    if sys.byteorder != "little":
        data.byteswap()
    return [s / 32768.0 for s in data[::channels]], rate


def goertzel_power(x: list[float], freq: float, rate: int) -> float:
    """|X(f)|^2 of x at one (not necessarily bin-centred) frequency."""
    coeff = 2.0 * math.cos(2.0 * math.pi * freq / rate)
    s1 = s2 = 0.0
    for v in x:
        s1, s2 = v + coeff * s1 - s2, s1
    return s1 * s1 + s2 * s2 - coeff * s1 * s2


def loudest(x: list[float], rate: int, seconds: float = 0.5) -> list[float]:
    block = max(1, rate // 10)
    n = min(len(x), int(rate * seconds))
    if len(x) <= n:
        return x
    energies = [sum(v * v for v in x[i : i + block]) for i in range(0, len(x) - block + 1, block)]
    per = n // block
    best = max(range(max(1, len(energies) - per + 1)), key=lambda i: sum(energies[i : i + per]))
    return x[best * block : best * block + n]


def analyse(path: str) -> dict:
    x, rate = read_mono(path)
    if not x:
        return {"frames": 0, "rate": rate, "frequency": None, "rms_dbfs": None, "peak": 0.0}
    seg = loudest(x, rate)
    rms = math.sqrt(sum(v * v for v in seg) / len(seg))
    coarse_seg = seg[: max(1, rate // 20)]
    coarse = max(range(20, rate // 2, 20), key=lambda f: goertzel_power(coarse_seg, f, rate))
    fine = max(range(max(1, coarse - 40), min(rate // 2, coarse + 41)), key=lambda f: goertzel_power(seg, f, rate))
    return {
        "frames": len(x),
        "rate": rate,
        "seconds_analysed": round(len(seg) / rate, 3),
        "frequency": fine,
        "rms_dbfs": round(20 * math.log10(rms), 1) if rms > 0 else None,
        "peak": round(max(abs(v) for v in x), 4),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("out")
    m.add_argument("--freq", type=float, default=1000.0)
    m.add_argument("--rate", type=int, default=48000)
    m.add_argument("--seconds", type=float, default=3.0)
    a = sub.add_parser("analyse")
    a.add_argument("wav")
    args = p.parse_args(argv)
    if args.cmd == "make":
        make(args.out, args.freq, args.rate, args.seconds)
    else:
        print(json.dumps(analyse(args.wav)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
