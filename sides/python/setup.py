"""What pyproject.toml cannot say: the wheel carries the prefork-interp
client, and prefork_interp_early.pth.

The client is this repository's Rust crate, built by setuptools-rust
(RustBin: the binary goes to the wheel's scripts, so `pip install` puts
`prefork-interp` on the venv's PATH). It is linked statically, so one
wheel serves every Linux of its architecture, glibc or musl: the wheel
is tagged py3-none-manylinux...musllinux..., not for one Python. The
crate is found:

- in crate/ beside this file: an sdist (its sdist command puts the crate
  there, as `cargo package` makes it);
- else in $PREFORK_INTERP_CRATE, a directory holding Cargo.toml (for a
  copy of sides/python outside the repository);
- else two directories up: sides/python in the repository.

PREFORK_INTERP_CLIENT=omit builds the module alone (a pure wheel):
`make install`, which installs the client itself, builds it so.

prefork_interp_early.pth goes beside the package in site-packages:
setuptools has no setting for a file outside a package, so build_py
copies it into the build.
"""

import os
import platform
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

try:
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # setuptools before 70.1
    from wheel.bdist_wheel import bdist_wheel

HERE = os.path.dirname(os.path.abspath(__file__))
EARLY = "prefork_interp_early.pth"
CLIENT = "prefork-interp"
# The kernel the static client needs is older than any these tags allow;
# manylinux2014 is manylinux_2_17's old name, which older pips know.
PLATFORMS = {
    "x86_64": "manylinux_2_17_x86_64.manylinux2014_x86_64.musllinux_1_1_x86_64",
    "aarch64": "manylinux_2_17_aarch64.manylinux2014_aarch64.musllinux_1_1_aarch64",
}


def fail(message):
    sys.exit(f"prefork-interp setup.py: {message}")


def wants_client():
    choice = os.environ.get("PREFORK_INTERP_CLIENT", "build")
    if choice not in ("build", "omit"):
        fail(f"PREFORK_INTERP_CLIENT={choice!r}: say build (the default) or omit")
    return choice == "build"


def crate_dir():
    """The client's crate, or None where there is none to be found."""
    given = os.environ.get("PREFORK_INTERP_CRATE")
    for candidate, why in [
        (os.path.join(HERE, "crate"), None),
        (given, "PREFORK_INTERP_CRATE"),
        (os.path.join(HERE, "..", ".."), None),
    ]:
        if candidate is None:
            continue
        if os.path.isfile(os.path.join(candidate, "Cargo.toml")):
            return os.path.abspath(candidate)
        if why:
            fail(f"{why}={candidate}: no Cargo.toml there")
    return None


def static_executable(path):
    """Whether the ELF file at `path` has no program interpreter (the
    dynamic loader): a static executable, which runs on any libc."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
            fail(f"{path}: not a 64-bit little-endian ELF file")
        phoff, = struct.unpack_from("<Q", head, 32)
        phentsize, phnum = struct.unpack_from("<HH", head, 54)
        for i in range(phnum):
            f.seek(phoff + i * phentsize)
            p_type, = struct.unpack("<I", f.read(4))
            if p_type == 3:  # PT_INTERP
                return False
    return True


class BuildPyWithEarlyPth(build_py):
    def run(self):
        super().run()
        self.copy_file(EARLY, os.path.join(self.build_lib, EARLY), preserve_mode=False)

    def get_outputs(self, include_bytecode=True):
        return super().get_outputs(include_bytecode) + [os.path.join(self.build_lib, EARLY)]


class BdistWheelForAnyLinux(bdist_wheel):
    """Any Python 3, no ABI (the client is a program, not an extension),
    every Linux libc of this machine's architecture."""

    def get_tag(self):
        python, abi, plat = super().get_tag()
        if not getattr(self.distribution, "rust_extensions", None):
            return python, abi, plat
        machine = platform.machine()
        if sys.platform != "linux" or machine not in PLATFORMS:
            fail(f"the client is built for Linux on {', '.join(PLATFORMS)}, not {sys.platform} {machine}")
        return "py3", "none", PLATFORMS[machine]

    def write_wheelfile(self, wheelfile_base, *args, **kwargs):
        # The client is in the wheel's tree by now: refuse one that would
        # not run everywhere the tag says.
        client = os.path.join(self.bdist_dir, self.data_dir, "scripts", CLIENT)
        if getattr(self.distribution, "rust_extensions", None) and not static_executable(client):
            fail(f"the client is linked dynamically (RUSTFLAGS without +crt-static?): {client}")
        super().write_wheelfile(wheelfile_base, *args, **kwargs)


class SdistWithCrate(sdist):
    """The sdist holds the crate, in crate/, so that a wheel builds from
    the sdist alone: what `cargo package` puts in a .crate (the sources,
    Cargo.lock, the manifest without the repository's test targets)."""

    def make_release_tree(self, base_dir, files):
        super().make_release_tree(base_dir, files)
        if not getattr(self.distribution, "rust_extensions", None):
            return
        crate = crate_dir()
        with tempfile.TemporaryDirectory() as target:
            subprocess.run(
                ["cargo", "package", "--quiet", "--no-verify", "--allow-dirty", "--locked",
                 "--manifest-path", os.path.join(crate, "Cargo.toml"), "--target-dir", target],
                check=True,
            )
            packaged, = [n for n in os.listdir(os.path.join(target, "package")) if n.endswith(".crate")]
            into = os.path.join(base_dir, "crate")
            with tarfile.open(os.path.join(target, "package", packaged)) as tar:
                top = packaged[: -len(".crate")]
                # (The "data" filter where this Python has it: 3.12, 3.11.4.)
                safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                tar.extractall(target, **safe)
            shutil.copytree(os.path.join(target, top), into)


def rust_extensions():
    if not wants_client():
        return []
    crate = crate_dir()
    if crate is None:
        fail(
            "the client's crate is not here: build from the repository's sides/python, "
            "from the sdist, with PREFORK_INTERP_CRATE=DIR, or with PREFORK_INTERP_CLIENT=omit "
            "for the module alone"
        )
    from setuptools_rust import RustBin, Strip

    # Static, as the repository's .cargo/config.toml has it (which cargo
    # does not find from an sdist's directory).
    flags = os.environ.get("RUSTFLAGS", "")
    if "+crt-static" not in flags:
        flags = f"{flags} -C target-feature=+crt-static".strip()
    return [
        RustBin(
            CLIENT,
            path=os.path.join(crate, "Cargo.toml"),
            args=["--locked"],
            # As distributions ship programs: Rust's symbols stripped (the
            # client is 2.3 MB, the wheel 1.1 MB).
            strip=Strip.All,
            env={**os.environ, "RUSTFLAGS": flags},
        )
    ]


# (No rust_extensions keyword at all for the module alone: it is
# setuptools-rust's, which a module-only build need not have.)
extensions = rust_extensions()
setup(
    cmdclass={"build_py": BuildPyWithEarlyPth, "bdist_wheel": BdistWheelForAnyLinux, "sdist": SdistWithCrate},
    **({"rust_extensions": extensions} if extensions else {}),
)
