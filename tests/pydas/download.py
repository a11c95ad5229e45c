"""Downloads a server path (/users/<First>_<Last>/...) into a local directory with pydas.download.

usage: download.py SERVER_PATH LOCAL_DIR
"""
import sys

from midas_env import login_with_api_key, pydas, report

login_with_api_key()
pydas.download(sys.argv[1], sys.argv[2])
report({"downloaded": sys.argv[1]})
