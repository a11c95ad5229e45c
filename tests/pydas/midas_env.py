"""Shared setup of the pydas test scripts: credentials from the environment, no retry back-off.

pydas retries every failing call 5 times with about 16 s of exponential back-off (`retrying`, which
sleeps with time.sleep); the tests check error paths too, so the back-off is switched off here,
before pydas is imported. The retries themselves still happen, as they would for a user.
"""
import json
import os
import sys
import time

time.sleep = lambda seconds: None

import pydas  # noqa: E402  (after the patch on purpose)
import pydas.drivers  # noqa: E402,F401

URL = os.environ["MIDAS_URL"]
EMAIL = os.environ["MIDAS_EMAIL"]
API_KEY = os.environ["MIDAS_API_KEY"]
PASSWORD = os.environ["MIDAS_PASSWORD"]
# The test's own folder, below the user's folder: Private on a fresh midasfs serve, a folder of
# its own in Private on a real Midas Server that other tests and runs use too.
FOLDER = os.environ.get("MIDAS_FOLDER", "Private")


def own_folder_path():
    """The server path of the test's own folder: /users/<First>_<Last>/<FOLDER>."""
    user = pydas.session.communicator.get_user_by_email(EMAIL)
    return "/users/{}_{}/{}".format(user["firstname"], user["lastname"], FOLDER)


def login_with_api_key():
    return pydas.login(email=EMAIL, api_key=API_KEY, url=URL)


def report(result):
    """Prints the result for the Rust test as one JSON document on stdout."""
    sys.stdout.flush()
    print("PYDAS-RESULT " + json.dumps(result))
