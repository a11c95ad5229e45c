"""Uploads a local file or tree with pydas.upload; reports the pydas exception, if any.

usage: upload.py LOCAL_PATH [--leaf] [--reuse] [--destination=DEST]
  --leaf         leaf_folders_as_items=True
  --reuse        reuse_existing=True
  --destination  a user folder name or a path such as /communities/X/Public (default: the
                 test's own folder, MIDAS_FOLDER)
"""
import sys

from midas_env import login_with_api_key, own_folder_path, pydas, report

options = sys.argv[2:]
destination = None
for option in options:
    if option.startswith("--destination="):
        destination = option.split("=", 1)[1]
login_with_api_key()
if destination is None:
    destination = own_folder_path()
try:
    pydas.upload(sys.argv[1], destination=destination,
                 leaf_folders_as_items="--leaf" in options,
                 reuse_existing="--reuse" in options)
    report({"error": None})
except Exception as error:  # pydas maps Midas errors to its own exception classes
    report({"error": type(error).__name__})
