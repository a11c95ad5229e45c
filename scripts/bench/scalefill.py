#!/usr/bin/env python3
"""Fill a stopped `midasfs serve` store with many objects at once, for the scale benchmark.

Creating 100,000 items through the API takes minutes; here each new object is a copy, in SQL,
of a template made through the API (its row, its policies, and for an item its revision and
bitstream), so that serve sees exactly what its own calls would have made.

    scalefill.py DB items FOLDER_ID TEMPLATE_ITEM_ID COUNT
        COUNT single-file items named item-000000… in FOLDER_ID, copies of TEMPLATE_ITEM_ID
    scalefill.py DB tree FOLDER_ID TEMPLATE_FOLDER_ID TEMPLATE_ITEM_ID FOLDERS ITEMS
        FOLDERS subfolders dir-0000… of FOLDER_ID, each holding ITEMS such items
"""

import sqlite3
import sys
import uuid


def copy_items(db, folder_id, template, count, prefix):
    item = db.execute(
        "SELECT description, sizebytes, date_creation, date_update FROM item WHERE item_id = ?",
        (template,),
    ).fetchone()
    revision = db.execute(
        "SELECT itemrevision_id, revision, date, changes, user_id FROM itemrevision "
        "WHERE item_id = ? ORDER BY revision DESC LIMIT 1",
        (template,),
    ).fetchone()
    bitstream = db.execute(
        "SELECT mimetype, sizebytes, checksum, path, date FROM bitstream WHERE itemrevision_id = ?",
        (revision[0],),
    ).fetchone()
    user_policies = db.execute(
        "SELECT user_id, policy FROM itempolicyuser WHERE item_id = ?", (template,)
    ).fetchall()
    group_policies = db.execute(
        "SELECT group_id, policy FROM itempolicygroup WHERE item_id = ?", (template,)
    ).fetchall()
    for i in range(count):
        name = f"{prefix}{i:06d}"
        cur = db.execute(
            "INSERT INTO item (name, description, sizebytes, date_creation, date_update, uuid) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (name, item[0], item[1], item[2], item[3], uuid.uuid4().hex),
        )
        item_id = cur.lastrowid
        db.execute("INSERT INTO item2folder (item_id, folder_id) VALUES (?, ?)", (item_id, folder_id))
        db.executemany(
            "INSERT INTO itempolicyuser (item_id, user_id, policy) VALUES (?, ?, ?)",
            [(item_id, u, p) for u, p in user_policies],
        )
        db.executemany(
            "INSERT INTO itempolicygroup (item_id, group_id, policy) VALUES (?, ?, ?)",
            [(item_id, g, p) for g, p in group_policies],
        )
        cur = db.execute(
            "INSERT INTO itemrevision (item_id, revision, date, changes, user_id, uuid) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (item_id, revision[1], revision[2], revision[3], revision[4], uuid.uuid4().hex),
        )
        db.execute(
            "INSERT INTO bitstream (itemrevision_id, name, mimetype, sizebytes, checksum, path, date) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (cur.lastrowid, name, *bitstream),
        )


def copy_folders(db, parent_id, template, count):
    folder = db.execute(
        "SELECT description, date_update, date_creation FROM folder WHERE folder_id = ?",
        (template,),
    ).fetchone()
    user_policies = db.execute(
        "SELECT user_id, policy FROM folderpolicyuser WHERE folder_id = ?", (template,)
    ).fetchall()
    group_policies = db.execute(
        "SELECT group_id, policy FROM folderpolicygroup WHERE folder_id = ?", (template,)
    ).fetchall()
    ids = []
    for i in range(count):
        cur = db.execute(
            "INSERT INTO folder (parent_id, name, description, date_update, date_creation, uuid) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (parent_id, f"dir-{i:04d}", folder[0], folder[1], folder[2], uuid.uuid4().hex),
        )
        folder_id = cur.lastrowid
        db.executemany(
            "INSERT INTO folderpolicyuser (folder_id, user_id, policy) VALUES (?, ?, ?)",
            [(folder_id, u, p) for u, p in user_policies],
        )
        db.executemany(
            "INSERT INTO folderpolicygroup (folder_id, group_id, policy) VALUES (?, ?, ?)",
            [(folder_id, g, p) for g, p in group_policies],
        )
        ids.append(folder_id)
    return ids


def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__)
    db = sqlite3.connect(argv[1], timeout=60)
    db.execute("PRAGMA synchronous = OFF")
    with db:
        if argv[2] == "items" and len(argv) == 6:
            folder, template, count = argv[3], int(argv[4]), int(argv[5])
            copy_items(db, folder, template, count, "item-")
        elif argv[2] == "tree" and len(argv) == 8:
            folder, template_folder, template_item = argv[3], int(argv[4]), int(argv[5])
            folders, items = int(argv[6]), int(argv[7])
            for folder_id in copy_folders(db, folder, template_folder, folders):
                copy_items(db, folder_id, template_item, items, "file-")
        else:
            sys.exit(__doc__)
    db.close()


if __name__ == "__main__":
    main(sys.argv)
