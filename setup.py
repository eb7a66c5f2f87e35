"""The one build step pyproject.toml cannot declare: install ``fslm_lm_eval.pth`` at the top of site-packages.

That file makes lm-eval find the ``fslm`` model by name (see ``fslm_lm_eval.py``).
Python reads ``.pth`` files only from the top of site-packages, which no
package-data setting reaches, so ``build_py`` writes it there itself: into the
wheel's root, or for an editable install (``pip install -e``) into the editable
wheel, whose packages stay in the source tree.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

PTH_FILE = "fslm_lm_eval.pth"
PTH_LINE = "import fslm_lm_eval; fslm_lm_eval.install()\n"


class BuildPyWithPth(build_py):
    def run(self) -> None:
        super().run()
        # An editable wheel is assembled in the install command's folder; build_lib is thrown away.
        root = self.get_finalized_command("install").install_lib if self.editable_mode else self.build_lib
        Path(root).mkdir(parents=True, exist_ok=True)
        Path(root, PTH_FILE).write_text(PTH_LINE, encoding="utf-8")

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = super().get_outputs(include_bytecode)
        return outputs if self.editable_mode else [*outputs, str(Path(self.build_lib, PTH_FILE))]


setup(cmdclass={"build_py": BuildPyWithPth})
