"""Calls of pydas's CoreDriver that pydas.upload and pydas.download do not make, in a sequence a
user script would: folders, items, uploads with checksum deduplication, metadata, search, move and
delete. Prints every answer for the Rust test to check.

usage: core_driver.py SCRATCH_DIR
"""
import hashlib
import json
import os
import sys
import urllib.request

from midas_env import FOLDER, URL, login_with_api_key, pydas, report

scratch = sys.argv[1]
token = login_with_api_key()
driver = pydas.session.communicator
results = {}


def stats():
    """serve's counters; a real Midas has none (None)."""
    try:
        with urllib.request.urlopen(URL + "/__midasfs/stats") as answer:
            return json.load(answer)
    except (OSError, ValueError):
        return None


def local_file(name, content):
    path = os.path.join(scratch, name)
    with open(path, "wb") as f:
        f.write(content)
    return path, hashlib.md5(content).hexdigest()


# the test's own folder (MIDAS_FOLDER, below the user's folder)
private = [f for f in driver.list_user_folders(token) if f["name"] == FOLDER.split("/")[0]][0]
for name in FOLDER.split("/")[1:]:
    private = [f for f in driver.folder_children(token, private["folder_id"])["folders"]
               if f["name"] == name][0]
folder = driver.create_folder(token, "core driver", private["folder_id"], description="by pydas")
results["create_folder"] = folder
results["folder_get"] = driver.folder_get(token, folder["folder_id"])

content = b"notes written through pydas.drivers.CoreDriver\n" * 100
path, checksum = local_file("notes.txt", content)
item = driver.create_item(token, "notes.txt", folder["folder_id"], description="first")
results["create_item"] = item
upload_token = driver.generate_upload_token(token, item["item_id"], "notes.txt", checksum)
results["upload_token"] = upload_token
results["perform_upload"] = driver.perform_upload(
    upload_token, "notes.txt", filepath=path, itemid=item["item_id"])
results["item_get"] = driver.item_get(token, item["item_id"])

# The same content under another item: the server knows the checksum and takes no bytes.
copy = driver.create_item(token, "copy.txt", folder["folder_id"])
results["stats_before_dedup"] = stats()
results["dedup_token"] = driver.generate_upload_token(token, copy["item_id"], "copy.txt", checksum)
results["stats_after_dedup"] = stats()
results["copy_get"] = driver.item_get(token, copy["item_id"])

results["set_item_metadata"] = driver.set_item_metadata(
    token, item["item_id"], "contributor", "pydas", qualifier="author")
results["get_item_metadata"] = driver.get_item_metadata(item["item_id"], token)
results["search_item_by_name"] = driver.search_item_by_name("notes.txt", token)

destination = driver.create_folder(token, "destination", folder["folder_id"])
results["move_item"] = driver.move_item(
    token, item["item_id"], folder["folder_id"], destination["folder_id"])
results["children_after_move"] = driver.folder_children(token, folder["folder_id"])
results["destination_children"] = driver.folder_children(token, destination["folder_id"])

results["delete_item"] = driver.delete_item(token, copy["item_id"])
results["children_after_delete"] = driver.folder_children(token, folder["folder_id"])
try:
    driver.item_get(token, copy["item_id"])
    results["get_deleted"] = "no error"
except Exception as error:  # pydas maps the Midas error to one of its exception classes
    results["get_deleted"] = type(error).__name__

report(results)
