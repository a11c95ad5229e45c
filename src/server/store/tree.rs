//! The folder tree: roots, parents, and Midas's nested-set numbering of a root's tree.

use rusqlite::{params, Connection, OptionalExtension};

/// The id of the root folder (parent −1 or −2) above `folder_id`.
pub fn root_of(conn: &Connection, folder_id: i64) -> rusqlite::Result<i64> {
    let mut current = folder_id;
    // Bounded walk: a cycle cannot be created through the API, but never loop forever.
    for _ in 0..10_000 {
        match parent_folder(conn, current)? {
            Some(parent) => current = parent,
            None => return Ok(current),
        }
    }
    Ok(current)
}

/// The root folder of a community (`QueryReturnedNoRows` when there is no such community).
pub fn community_root(conn: &Connection, community_id: i64) -> rusqlite::Result<i64> {
    conn.query_row(
        "SELECT folder_id FROM community WHERE community_id = ?1",
        [community_id],
        |r| r.get(0),
    )
}

/// The parent of a folder; none for a root (parent −1 or −2) or a folder that does not exist.
pub fn parent_folder(conn: &Connection, folder_id: i64) -> rusqlite::Result<Option<i64>> {
    let parent: Option<i64> = conn
        .query_row(
            "SELECT parent_id FROM folder WHERE folder_id = ?1",
            [folder_id],
            |r| r.get(0),
        )
        .optional()?;
    Ok(parent.filter(|p| *p > 0))
}

/// Recompute the nested-set `left_index`/`right_index` of one root folder's tree, the way
/// Midas numbers it (root at 0). Called after every change to that tree's shape.
pub fn renumber_tree(conn: &Connection, root_id: i64) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare(
        "WITH RECURSIVE t(id, parent) AS (SELECT folder_id, parent_id FROM folder WHERE folder_id = ?1 \
         UNION ALL SELECT f.folder_id, f.parent_id FROM folder f JOIN t ON f.parent_id = t.id) \
         SELECT t.id, t.parent, f.name FROM t JOIN folder f ON f.folder_id = t.id",
    )?;
    let rows: Vec<(i64, i64, String)> = stmt
        .query_map([root_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    let mut children: std::collections::HashMap<i64, Vec<(String, i64)>> = Default::default();
    for (id, parent, name) in &rows {
        if *id != root_id {
            children
                .entry(*parent)
                .or_default()
                .push((name.clone(), *id));
        }
    }
    for list in children.values_mut() {
        list.sort();
    }
    let mut numbers = Vec::with_capacity(rows.len());
    let mut counter = 0i64;
    // Iterative DFS: (id, entered)
    let mut stack = vec![(root_id, false)];
    let mut left_of = std::collections::HashMap::new();
    while let Some((id, entered)) = stack.pop() {
        if entered {
            numbers.push((id, left_of[&id], counter));
            counter += 1;
        } else {
            left_of.insert(id, counter);
            counter += 1;
            stack.push((id, true));
            if let Some(list) = children.get(&id) {
                for (_, child) in list.iter().rev() {
                    stack.push((*child, false));
                }
            }
        }
    }
    let mut update = conn.prepare(
        "UPDATE folder SET left_index = ?2, right_index = ?3 WHERE folder_id = ?1 AND (left_index != ?2 OR right_index != ?3)",
    )?;
    for (id, left, right) in numbers {
        update.execute(params![id, left, right])?;
    }
    Ok(())
}
