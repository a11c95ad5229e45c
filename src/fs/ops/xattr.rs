//! Extended attributes: `user.midas.*` describes a node (id, type, md5, url…), read-only;
//! `user.midas.meta.*` are the item's metadata, which can be set and removed.

use std::sync::Arc;
use std::time::Instant;

use crate::fs::error::Kind;
use crate::fs::history::REVISIONS_XATTR;
use crate::fs::inode::{ItemInfo, NodeKind};
use crate::fs::item_dirs::TYPE_XATTR;
use crate::fs::write::write_error;
use crate::fs::{unknown_inode, FsError, FsResult, MidasFs};
use crate::midas::codes;
use crate::midas::types::{Id, MetadataValue};

/// Every extended attribute of the mount has a name starting with this.
pub const XATTR_PREFIX: &str = "user.midas.";
pub(in crate::fs) const META_PREFIX: &str = "user.midas.meta.";

impl MidasFs {
    /// Names of the `user.midas.*` attributes of a node.
    pub async fn listxattr(&self, ino: u64) -> FsResult<Vec<String>> {
        self.resolve_saved_file(ino).await?;
        let mut names: Vec<String> = self
            .fixed_xattrs(ino)?
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        if self.has_revisions_xattr(ino) && !self.is_revision(ino) {
            names.push(REVISIONS_XATTR.to_owned());
        }
        if let Some(item) = self.item_of(ino) {
            for value in self.item_metadata(ino, item.id).await?.iter() {
                names.push(metadata_xattr_name(value));
            }
        }
        Ok(names)
    }

    pub async fn getxattr(&self, ino: u64, name: &str) -> FsResult<Vec<u8>> {
        self.resolve_saved_file(ino).await?;
        if name == REVISIONS_XATTR {
            if let Some(text) = self.revisions_xattr(ino).await? {
                return Ok(text.into_bytes());
            }
        }
        if let Some((_, value)) = self.fixed_xattrs(ino)?.into_iter().find(|(n, _)| n == name) {
            return Ok(value.into_bytes());
        }
        if name.starts_with(META_PREFIX) {
            if let Some(item) = self.item_of(ino) {
                let metadata = self.item_metadata(ino, item.id).await?;
                if let Some(value) = metadata.iter().find(|v| metadata_xattr_name(v) == name) {
                    return Ok(value.value.clone().into_bytes());
                }
            }
        }
        Err(FsError::new(
            Kind::NoAttribute,
            format!("no attribute {name}"),
        ))
    }

    pub(in crate::fs) fn item_of(&self, ino: u64) -> Option<ItemInfo> {
        self.nodes().get(&ino)?.data.kind.item().cloned()
    }

    pub(in crate::fs) fn fixed_xattrs(&self, ino: u64) -> FsResult<Vec<(String, String)>> {
        let kind = self
            .nodes()
            .get(&ino)
            .map(|n| n.data.kind.clone())
            .ok_or_else(|| unknown_inode(ino))?;
        let base = self.client.base_url().to_owned();
        let mut attrs: Vec<(&str, String)> = Vec::new();
        match &kind {
            NodeKind::Folder { id, uuid } => {
                attrs.push(("id", id.to_string()));
                attrs.push(("type", "folder".into()));
                if !uuid.is_empty() {
                    attrs.push(("uuid", uuid.clone()));
                }
                attrs.push(("url", format!("{base}/folder/{id}")));
            }
            NodeKind::ItemFile { item, bitstream } | NodeKind::Bitstream { item, bitstream } => {
                let is_item = matches!(kind, NodeKind::ItemFile { .. });
                attrs.push((
                    "id",
                    if is_item { item.id } else { bitstream.id }.to_string(),
                ));
                attrs.push(("type", if is_item { "item" } else { "bitstream" }.into()));
                attrs.push(("item_id", item.id.to_string()));
                attrs.push(("bitstream_id", bitstream.id.to_string()));
                attrs.push(("md5", bitstream.md5.to_string()));
                attrs.push(("mimetype", bitstream.mimetype.to_string()));
                attrs.push(("uuid", item.uuid.to_string()));
                attrs.push(("url", format!("{base}/item/{}", item.id)));
                attrs.push(("revision", item.revision.to_string()));
            }
            NodeKind::ItemDir { item } => {
                attrs.push(("id", item.id.to_string()));
                attrs.push(("type", "item".into()));
                attrs.push(("uuid", item.uuid.to_string()));
                attrs.push(("url", format!("{base}/item/{}", item.id)));
                attrs.push(("revision", item.revision.to_string()));
            }
            // Callers resolve a saved file into an item file first.
            NodeKind::Root
            | NodeKind::Communities
            | NodeKind::Users
            | NodeKind::Home { .. }
            | NodeKind::SavedFile { .. }
            | NodeKind::NewFile { .. }
            | NodeKind::Search(_) => {}
        }
        let privacy = self.privacy_xattr(ino);
        if let Some(privacy) = &privacy {
            attrs.push(("privacy", privacy.clone()));
        }
        Ok(attrs
            .into_iter()
            .map(|(name, value)| (format!("{XATTR_PREFIX}{name}"), value))
            .collect())
    }

    pub(in crate::fs) async fn item_metadata(
        &self,
        ino: u64,
        item_id: Id,
    ) -> FsResult<Arc<Vec<MetadataValue>>> {
        if let Some((fetched, values)) = self.nodes().get(&ino).and_then(|n| n.metadata.clone()) {
            if fetched.elapsed() < self.config.ttl {
                return Ok(values);
            }
        }
        let values = match self.client.item_get_metadata(item_id).await {
            Ok(values) => Arc::new(values),
            // An item without revisions cannot have metadata: Midas says −151.
            Err(err) if err.api_code() == Some(codes::INVALID_POLICY) => Arc::new(Vec::new()),
            Err(err) => return Err(err.into()),
        };
        if let Some(node) = self.nodes().get_mut(&ino) {
            node.metadata = Some((Instant::now(), Arc::clone(&values)));
        }
        Ok(values)
    }
    /// `user.midas.meta.<element>[.<qualifier>]` sets a metadata value of the item's head
    /// revision; `user.midas.type` of a directory makes it an item or a folder (see
    /// [`crate::fs::item_dirs`]). Other `user.midas.*` names are read-only (EPERM); anything else
    /// is not supported (ENOTSUP, which `cp -a` and `rsync -X` tolerate).
    pub async fn setxattr(&self, ino: u64, name: &str, value: &[u8], flags: i32) -> FsResult<()> {
        self.check_writable()?;
        self.refuse_read_only_node(ino)?;
        if name == TYPE_XATTR && self.node_data(ino)?.kind.is_dir() {
            return self.set_type(ino, value).await;
        }
        let (item, element, qualifier) = self.metadata_target(ino, name)?;
        let value = std::str::from_utf8(value).map_err(|_| {
            FsError::new(
                Kind::Invalid,
                format!("{name}: the value is not UTF-8 text"),
            )
        })?;
        if flags & (libc::XATTR_CREATE | libc::XATTR_REPLACE) != 0 {
            let exists = self.getxattr(ino, name).await.is_ok();
            if exists && flags & libc::XATTR_CREATE != 0 {
                return Err(FsError::new(Kind::Exists, format!("{name} exists")));
            }
            if !exists && flags & libc::XATTR_REPLACE != 0 {
                return Err(FsError::new(
                    Kind::NoAttribute,
                    format!("no attribute {name}"),
                ));
            }
        }
        self.client
            .item_set_metadata(item.id, element, qualifier, value)
            .await
            .map_err(write_error)?;
        self.forget_metadata(item.id);
        Ok(())
    }

    pub async fn removexattr(&self, ino: u64, name: &str) -> FsResult<()> {
        self.check_writable()?;
        self.refuse_read_only_node(ino)?;
        if !name.starts_with(META_PREFIX) {
            self.resolve_saved_file(ino).await?;
            if self
                .fixed_xattrs(ino)?
                .iter()
                .any(|(fixed, _)| fixed == name)
                || (name == REVISIONS_XATTR && self.has_revisions_xattr(ino))
            {
                // Derived from the server (id, md5, …), so they stay; refusing would fail
                // `rsync -X`, which removes every attribute its source lacks.
                return Ok(());
            }
        }
        let (item, element, qualifier) = self.metadata_target(ino, name)?;
        // Midas answers the same for a value that was not there: ask first, for ENODATA.
        self.getxattr(ino, name).await?;
        self.client
            .item_delete_metadata(item.id, element, qualifier)
            .await
            .map_err(write_error)?;
        self.forget_metadata(item.id);
        Ok(())
    }

    pub(in crate::fs) fn metadata_target<'n>(
        &self,
        ino: u64,
        name: &'n str,
    ) -> FsResult<(ItemInfo, &'n str, &'n str)> {
        let Some(rest) = name.strip_prefix(META_PREFIX) else {
            return Err(if name.starts_with("user.midas.") {
                FsError::new(Kind::NotPermitted, format!("{name} is read-only"))
            } else {
                FsError::new(
                    Kind::NotSupported,
                    format!("{name}: only {META_PREFIX}* can be set"),
                )
            });
        };
        let (element, qualifier) = rest.split_once('.').unwrap_or((rest, ""));
        if element.is_empty() {
            return Err(FsError::new(
                Kind::Invalid,
                format!("{name}: no metadata element"),
            ));
        }
        let item = self.item_of(ino).ok_or_else(|| {
            FsError::new(
                Kind::NotSupported,
                format!("{}: only items have metadata", self.describe(ino)),
            )
        })?;
        Ok((item, element, qualifier))
    }

    pub(in crate::fs) fn forget_metadata(&self, item_id: Id) {
        for node in self.nodes().values_mut() {
            if node.data.kind.item().is_some_and(|i| i.id == item_id) {
                node.metadata = None;
            }
        }
    }
}

pub(in crate::fs) fn metadata_xattr_name(value: &MetadataValue) -> String {
    if value.qualifier.is_empty() {
        format!("{META_PREFIX}{}", value.element)
    } else {
        format!("{META_PREFIX}{}.{}", value.element, value.qualifier)
    }
}
