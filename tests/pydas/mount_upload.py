"""Uploads a local file or folder with pydas.upload, as a user of the official client would.

usage: mount_upload.py LOCAL_PATH DESTINATION [--leaf]
Credentials come from MIDAS_URL, MIDAS_EMAIL and MIDAS_API_KEY.
"""
import os
import sys

import pydas

local, destination = sys.argv[1], sys.argv[2]
pydas.login(email=os.environ["MIDAS_EMAIL"], api_key=os.environ["MIDAS_API_KEY"],
            url=os.environ["MIDAS_URL"])
pydas.upload(local, destination=destination, leaf_folders_as_items="--leaf" in sys.argv[3:])
