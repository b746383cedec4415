"""Network namespaces for fault tests: make one, run processes in it, and slow down or drop its loopback traffic.

Everything happens inside a namespace this module created, so the host's network is never touched. Drops
use only what a stock kernel has, with no package to install: the root qdisc is htb, whose default class
passes traffic at full speed, and whose second class ends in a pfifo that holds 0 packets, so it drops
whatever is sent to it. A u32 filter sends one port's packets there (a black hole), a classic BPF filter
(`ld rand`) a random share of all packets (loss). `tc netem` and tc actions (gact) are missing on our CI
kernel, and nft and iptables are not installed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Sequence

DROP_CLASS = "1:2"
DROP_CLASSID = 0x0001_0002  # 1:2 as the number a BPF filter returns
LO_MTU = 65536


class NetnsUnavailable(Exception):
    """This machine cannot give a test a network namespace or the tc feature it needs; the message says why."""


def unavailable_reason() -> str | None:
    """Why namespaces cannot be used here, or None if they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    missing = [tool for tool in ("ip", "tc", "ss") if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not installed (iproute2)"
    return None


class Netns:
    """A network namespace with its loopback up. Make one with `Netns.create`; `delete` it when done."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._black_holed: list[int] = []  # faults set through this object, for repr
        self._loss = 0.0
        self._shaped = ""

    @classmethod
    def create(cls, prefix: str = "tfault") -> Netns:
        """Makes a namespace named `<prefix>-<pid>-<n>`.

        Raises:
            NetnsUnavailable: not root, no iproute2, or the kernel refused the namespace.
        """
        reason = unavailable_reason()
        if reason:
            raise NetnsUnavailable(reason)
        name = f"{prefix}-{os.getpid()}-{time.monotonic_ns() % 100_000}"
        added = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True, timeout=10)
        if added.returncode != 0:
            raise NetnsUnavailable(f"ip netns add failed: {added.stderr.strip()}")
        namespace = cls(name)
        try:
            namespace.run("ip", "link", "set", "lo", "up")
        except BaseException:
            namespace.delete()
            raise
        return namespace

    def delete(self) -> None:
        """Deletes the namespace (processes still inside keep it alive until they exit: stop them first)."""
        subprocess.run(["ip", "netns", "delete", self.name], capture_output=True, timeout=10)

    # -- processes ---------------------------------------------------------------------------

    def command(self, *argv: str) -> list[str]:
        """`argv` as a command line that runs inside the namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, *argv: str, timeout_s: float = 10) -> str:
        """Runs a command inside the namespace and returns its output.

        Raises:
            NetnsUnavailable: the command failed (its stderr is the message).
        """
        done = subprocess.run(self.command(*argv), capture_output=True, text=True, timeout=timeout_s)
        if done.returncode != 0:
            raise NetnsUnavailable(f"`{' '.join(argv)}` failed in {self.name}: {done.stderr.strip()}")
        return done.stdout

    def popen(self, argv: Sequence[str], **popen_args: object) -> subprocess.Popen:
        """Starts a process inside the namespace (`ip netns exec` execs it, so the pid is the process's own)."""
        return subprocess.Popen(self.command(*argv), **popen_args)  # type: ignore[call-overload]

    def wait_listening(self, port: int, timeout_s: float = 20, process: subprocess.Popen | None = None) -> None:
        """Waits until something listens on TCP `port` in the namespace.

        Raises:
            TimeoutError: nothing listened in time, or `process` exited first.
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if f":{port} " in self.run("ss", "-Hltn", f"sport = :{port}"):
                return
            if process is not None and process.poll() is not None:
                raise TimeoutError(f"the process meant to listen on {port} exited with {process.returncode}")
            time.sleep(0.1)
        raise TimeoutError(f"nothing listens on port {port} in {self.name} after {timeout_s:.0f} s")

    # -- faults ------------------------------------------------------------------------------

    def limit_bandwidth(self, rate: str = "2mbit", burst: str = "16kb", latency: str = "300ms", mtu: int = 1500) -> None:
        """Puts a token bucket (tbf) on the loopback; the MTU drops to `mtu` because the burst must exceed it
        (with loopback's 64 KiB MTU every packet would be dropped).

        Raises:
            NetnsUnavailable: another fault is set (clear it first), or tc refused.
        """
        if self._root_qdisc() == "htb":
            raise NetnsUnavailable("clear the drop rules before limiting bandwidth (both need the root qdisc)")
        self.run("ip", "link", "set", "lo", "mtu", str(mtu))
        self.run("tc", "qdisc", "replace", "dev", "lo", "root", "tbf", "rate", rate, "burst", burst, "latency", latency)
        self._shaped = f"tbf {rate} mtu {mtu}"

    def black_hole(self, port: int) -> None:
        """Drops every packet to or from TCP `port` from now on: its peers hear nothing, not even a reset.

        Raises:
            NetnsUnavailable: tc refused (the kernel lacks htb, pfifo or u32).
        """
        self._drop_root()
        for direction in ("dport", "sport"):
            self.run("tc", "filter", "add", "dev", "lo", "parent", "1:", "protocol", "ip", "prio", "1", "u32",
                     "match", "ip", direction, str(port), "0xffff", "flowid", DROP_CLASS)
        self._black_holed.append(port)

    def random_loss(self, share: float) -> None:
        """Drops each packet on the loopback with probability `share`, in both directions.

        Raises:
            NetnsUnavailable: tc refused (the kernel lacks cls_bpf).
        """
        if not 0 < share < 1:
            raise ValueError(f"share must be between 0 and 1 (got {share})")
        self._drop_root()
        # Classic BPF: A = a random u32; if A >= threshold, no match (the default class passes it);
        # else return the drop class. cls_bpf reads a nonzero return value as a classid.
        threshold = int(share * 2**32)
        random_word = 0xFFFFF000 + 56  # SKF_AD_OFF + SKF_AD_RANDOM
        program = f"4,32 0 0 {random_word},53 1 0 {threshold},6 0 0 {DROP_CLASSID},6 0 0 0"
        self.run("tc", "filter", "add", "dev", "lo", "parent", "1:", "protocol", "all", "prio", "2", "bpf",
                 "bytecode", program, "classid", "1:1")
        self._loss = share

    def drop_connects(self, port: int) -> None:
        """Drops every SYN to TCP `port` (new connections) until `allow_connects`; open connections go on.

        Raises:
            NetnsUnavailable: tc refused (the kernel lacks htb, pfifo or u32).
        """
        self._drop_root()
        # An IPv4 header without options (20 bytes), TCP, destination `port`, flags SYN without ACK.
        self.run("tc", "filter", "add", "dev", "lo", "parent", "1:", "protocol", "ip", "prio", "3", "u32",
                 "match", "u8", "0x05", "0x0f", "at", "0", "match", "ip", "protocol", "6", "0xff",
                 "match", "ip", "dport", str(port), "0xffff", "match", "u8", "0x02", "0x12", "at", "33",
                 "flowid", DROP_CLASS)

    def allow_connects(self) -> None:
        """Removes every `drop_connects` rule."""
        self.run("tc", "filter", "del", "dev", "lo", "parent", "1:", "prio", "3")

    def dropped_share(self) -> tuple[int, int]:
        """(packets dropped, packets seen) on the loopback since the drop rules were set."""
        stats = self.run("tc", "-s", "qdisc", "show", "dev", "lo")
        root = re.search(r"qdisc htb 1: root.*?Sent \d+ bytes (\d+) pkt \(dropped (\d+)", stats, re.S)
        if root is None:
            return 0, 0
        sent, dropped = int(root.group(1)), int(root.group(2))
        return dropped, sent + dropped

    def clear(self) -> None:
        """Removes every fault: the root qdisc goes back to the default and the MTU to 64 KiB."""
        subprocess.run(self.command("tc", "qdisc", "del", "dev", "lo", "root"), capture_output=True, timeout=10)
        self.run("ip", "link", "set", "lo", "mtu", str(LO_MTU))
        self._black_holed, self._loss, self._shaped = [], 0.0, ""

    def _root_qdisc(self) -> str:
        """The kind of the loopback's root qdisc (the driver process sets faults too, so ask the kernel)."""
        shown = re.search(r"qdisc (\S+) \S+ root", self.run("tc", "qdisc", "show", "dev", "lo"))
        return shown.group(1) if shown else ""

    def _drop_root(self) -> None:
        kind = self._root_qdisc()
        if kind == "htb":
            return
        if kind == "tbf":
            raise NetnsUnavailable("clear the bandwidth limit before dropping packets (both need the root qdisc)")
        self.run("tc", "qdisc", "replace", "dev", "lo", "root", "handle", "1:", "htb", "default", "1")
        self.run("tc", "class", "add", "dev", "lo", "parent", "1:", "classid", "1:1", "htb", "rate", "100gbit",
                 "burst", "1mb", "cburst", "1mb", "quantum", "200000")
        self.run("tc", "class", "add", "dev", "lo", "parent", "1:", "classid", DROP_CLASS, "htb", "rate", "1mbit")
        self.run("tc", "qdisc", "add", "dev", "lo", "parent", DROP_CLASS, "handle", "2:", "pfifo", "limit", "0")

    def __repr__(self) -> str:
        faults = [f"black hole on {', '.join(map(str, self._black_holed))}"] if self._black_holed else []
        faults += [f"{self._loss:.0%} loss"] if self._loss else []
        faults += [self._shaped] if self._shaped else []
        return f"<Netns {self.name}: {'; '.join(faults) or 'no faults'}>"
