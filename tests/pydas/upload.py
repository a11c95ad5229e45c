"""Uploads a local file or tree into Private with pydas.upload; reports the pydas exception, if any.

usage: upload.py LOCAL_PATH [--leaf] [--reuse]
  --leaf   leaf_folders_as_items=True
  --reuse  reuse_existing=True
"""
import sys

from midas_env import login_with_api_key, pydas, report

login_with_api_key()
try:
    pydas.upload(sys.argv[1], destination="Private",
                 leaf_folders_as_items="--leaf" in sys.argv[2:],
                 reuse_existing="--reuse" in sys.argv[2:])
    report({"error": None})
except Exception as error:  # pydas maps Midas errors to its own exception classes
    report({"error": type(error).__name__})
