"""Logs in with pydas.login, with a password (through midas.user.apikey.default) or an API key.

usage: login.py password|apikey
Prints the token, the API key pydas ended up with, and what a logged-in session sees.
"""
import sys

from midas_env import EMAIL, PASSWORD, URL, login_with_api_key, pydas, report

if sys.argv[1] == "password":
    token = pydas.login(email=EMAIL, password=PASSWORD, url=URL)
else:
    token = login_with_api_key()
communicator = pydas.session.communicator
report({
    "token": token,
    "api_key": pydas.session.api_key,
    "application": pydas.session.application,
    "version": communicator.get_server_version(),
    "user_folders": [f["name"] for f in communicator.list_user_folders(token)],
})
