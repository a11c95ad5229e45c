"""Uploads a local tree into Private with pydas.upload, then downloads it back with pydas.download.

usage: roundtrip.py LOCAL_DIR DOWNLOAD_DIR [--leaf]
The server path of the upload is /users/<First>_<Last>/Private/<basename of LOCAL_DIR>.
"""
import os
import sys

from midas_env import EMAIL, login_with_api_key, pydas, report

local, download_dir = sys.argv[1], sys.argv[2]
leaf = "--leaf" in sys.argv[3:]
token = login_with_api_key()
pydas.upload(local, destination="Private", leaf_folders_as_items=leaf)
user = pydas.session.communicator.get_user_by_email(EMAIL)
server_path = "/users/{}_{}/Private/{}".format(
    user["firstname"], user["lastname"], os.path.basename(os.path.normpath(local)))
pydas.download(server_path, download_dir)
report({"server_path": server_path})
