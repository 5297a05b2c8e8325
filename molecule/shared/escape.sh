# Escape checks, run by verify.yml as root inside a kiosk guest (in the guest's
# namespaces and cgroup), then by the VM's root as the control. Each check prints
# "NAME RC OUTPUT": in a guest of the default profile (confined) every RC must be
# non-zero, on the VM itself every RC must be 0. verify.yml makes
# /dev/kiosk-esc-disk (the VM's disk) and /tmp/kiosk-esc.ko (a module of the
# VM's kernel) in the guest from the VM's side first, as a guest cannot.
chk() {
	name=$1
	shift
	out=$("$@" 2>&1)
	rc=$?
	echo "$name $rc $(printf '%s' "$out" | tr '\n' ' ' | cut -c1-160)"
}
rm -f /tmp/kiosk-esc-null
chk mknod mknod /tmp/kiosk-esc-null c 1 3
chk disk dd if=/dev/kiosk-esc-disk of=/dev/null bs=512 count=1
chk sys_write sh -c 'echo 500 >/sys/class/net/lo/tx_queue_len'
chk sys_remount mount -o remount,rw /sys
chk libvirt_sock test -e /run/libvirt/libvirt-sock
chk insmod insmod /tmp/kiosk-esc.ko
chk host_procs sh -c 'for p in /proc/[0-9]*; do cat $p/comm; done 2>/dev/null | grep -xE "libvirtd|sshd|dnsmasq"'
chk host_links sh -c 'ls /sys/class/net | grep -vxE "lo|eth0"'
# The guest's own bounding set is its init's (this shell came in through nsenter
# with the VM's set; it gets no further for that: the checks above ran with it).
echo "capbnd - $(sed -n 's/^CapBnd:[[:space:]]*//p' /proc/1/status)"
echo "dbus_id - $(busctl --system call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus GetId 2>&1)"
