"""Run folders: their files and configuration, and training into one.

:mod:`.folder` names a run folder's files and reads and writes them, :mod:`.config`
checks the configuration it records, :mod:`.resume` what a resume needs, :mod:`.train`
trains into one. Nothing here imports the report package, which reads run folders.
"""
