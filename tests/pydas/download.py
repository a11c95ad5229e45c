"""Downloads a server path (/users/<First>_<Last>/... or /communities/<Name>/...) into a local
directory with pydas.download; reports the pydas exception, if any.

usage: download.py SERVER_PATH LOCAL_DIR
"""
import sys

from midas_env import login_with_api_key, pydas, report

login_with_api_key()
try:
    pydas.download(sys.argv[1], sys.argv[2])
    report({"error": None})
except Exception as error:  # pydas maps Midas errors to its own exception classes
    report({"error": type(error).__name__})
