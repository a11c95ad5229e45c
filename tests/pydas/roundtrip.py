"""Uploads a local tree into the test's own folder (MIDAS_FOLDER) with pydas.upload, then downloads it back with pydas.download.

usage: roundtrip.py LOCAL_DIR DOWNLOAD_DIR [--leaf]
The server path of the upload is /users/<First>_<Last>/<MIDAS_FOLDER>/<basename of LOCAL_DIR>.
"""
import os
import sys

from midas_env import login_with_api_key, own_folder_path, pydas, report

local, download_dir = sys.argv[1], sys.argv[2]
leaf = "--leaf" in sys.argv[3:]
token = login_with_api_key()
pydas.upload(local, destination=own_folder_path(), leaf_folders_as_items=leaf)
server_path = "{}/{}".format(own_folder_path(), os.path.basename(os.path.normpath(local)))
pydas.download(server_path, download_dir)
report({"server_path": server_path})
