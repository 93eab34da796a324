"""A real OpenSSH server for the deploy tests: sshd -D -f <generated config> on a free loopback
port, as the current user, with throwaway host and user keys (ssh-keygen), no PAM, StrictModes
off (the keys live in a temporary folder)."""

import getpass
import os
import shutil
import socket
import subprocess
import time
from typing import List, Optional

import pytest

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class SshServer:
    def __init__(self, folder: str):
        for tool in (SSHD, shutil.which("ssh-keygen"), shutil.which("ssh")):
            if not tool or not os.access(tool, os.X_OK):
                pytest.skip("OpenSSH is not installed (apt-get install openssh-server "
                            "openssh-client, or `make setup` as root)")
        self.folder = folder
        self.port = _free_port()
        self.user = getpass.getuser()
        self.host_key = os.path.join(folder, "host_ed25519")
        self.user_key = os.path.join(folder, "user_ed25519")
        for key in (self.host_key, self.user_key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
        self.authorized = os.path.join(folder, "authorized_keys")
        shutil.copy(self.user_key + ".pub", self.authorized)
        self.known_hosts = os.path.join(folder, "known_hosts")
        with open(self.host_key + ".pub") as pub, open(self.known_hosts, "w") as out:
            out.write("[127.0.0.1]:%d %s" % (self.port, pub.read()))
        self.config = os.path.join(folder, "sshd_config")
        self.log = os.path.join(folder, "sshd.log")
        with open(self.config, "w") as handle:
            handle.write("\n".join([
                "Port %d" % self.port, "ListenAddress 127.0.0.1", "HostKey %s" % self.host_key,
                "AuthorizedKeysFile %s" % self.authorized, "PasswordAuthentication no",
                "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no",
                "PermitRootLogin prohibit-password", "PidFile %s" % os.path.join(folder, "sshd.pid"),
                "Subsystem sftp internal-sftp", "LogLevel ERROR", ""]))
        self.process: Optional[subprocess.Popen] = None

    @property
    def board(self) -> str:
        return "%s@127.0.0.1" % self.user

    def ssh_options(self) -> List[str]:
        return ["IdentityFile=%s" % self.user_key, "UserKnownHostsFile=%s" % self.known_hosts,
                "StrictHostKeyChecking=yes", "IdentitiesOnly=yes", "LogLevel=ERROR"]

    def start(self, timeout: float = 10.0) -> "SshServer":
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege-separation folder as root
        self.process = subprocess.Popen([SSHD, "-D", "-e", "-f", self.config],
                                        stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)
        ends = time.monotonic() + timeout
        while time.monotonic() < ends:
            if self.process.poll() is not None:
                with open(self.log) as log:
                    raise RuntimeError("sshd exited with %d: %s" % (self.process.returncode, log.read()))
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.05)
        raise RuntimeError("sshd did not listen on port %d" % self.port)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
