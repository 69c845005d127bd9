"""The wheel also puts prefork_interp_early.pth beside the package in
site-packages (pyproject.toml has the rest): setuptools has no setting
for a file outside a package, so build_py copies it into the build."""

import os

from setuptools import setup
from setuptools.command.build_py import build_py

EARLY = "prefork_interp_early.pth"


class BuildPyWithEarlyPth(build_py):
    def run(self):
        super().run()
        self.copy_file(EARLY, os.path.join(self.build_lib, EARLY), preserve_mode=False)

    def get_outputs(self, include_bytecode=True):
        return super().get_outputs(include_bytecode) + [os.path.join(self.build_lib, EARLY)]


setup(cmdclass={"build_py": BuildPyWithEarlyPth})
