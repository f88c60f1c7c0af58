"""Run folders: their files and configuration, and training into one.

:mod:`.folder` names a run folder's files and reads and writes them, :mod:`.config`
checks the configuration it records, :mod:`.train` trains into one. Nothing here
imports the report package, which reads run folders.
"""

from __future__ import annotations

from img2img.run.config import DataConfig, ModelConfig, RunFolderError
from img2img.run.folder import RunFolder

__all__ = ["DataConfig", "ModelConfig", "RunFolder", "RunFolderError"]
