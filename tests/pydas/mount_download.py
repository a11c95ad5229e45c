"""Downloads a folder or item with pydas.download, as a user of the official client would.

usage: mount_download.py SERVER_PATH LOCAL_DIR
Credentials come from MIDAS_URL, MIDAS_EMAIL and MIDAS_API_KEY.
"""
import os
import sys

import pydas

server_path, local_dir = sys.argv[1], sys.argv[2]
pydas.login(email=os.environ["MIDAS_EMAIL"], api_key=os.environ["MIDAS_API_KEY"],
            url=os.environ["MIDAS_URL"])
pydas.download(server_path, local_path=local_dir)
