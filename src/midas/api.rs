//! The Midas calls the filesystem makes, as a trait: [`super::Client`] answers them over HTTP,
//! and the in-memory [`super::fake::FakeMidas`] answers them in tests, with faults on demand.
//!
//! The filesystem holds an `Arc<dyn MidasApi>` ([`Api`]) rather than being generic over it:
//! a type parameter would run through every `impl MidasFs` block, the FUSE adapter and the
//! mount, and a virtual call costs nothing next to a round trip to a server. The methods keep
//! the names, arguments and answers of the client's own, so a call reads the same either way;
//! their contract is the client's (see each method there), errors included.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use super::client::{ByteStream, Client, UploadPart, UploadRevision};
use super::types::{Changed, Children, Community, Folder, Id, Item, MetadataValue, User};
use super::Result;

/// A call's answer to come.
pub type Call<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// A Midas server as the filesystem sees it, shared.
pub type Api = Arc<dyn MidasApi>;

/// The Midas calls the filesystem makes (see [`Client`] for what each one does on the wire).
pub trait MidasApi: Send + Sync + 'static {
    /// The installation root, without a trailing `/` (for URLs shown to users).
    fn base_url(&self) -> &str;
    fn user_get_by_name<'a>(&'a self, first: &'a str, last: &'a str) -> Call<'a, Option<User>>;
    /// None when the caller may not see the user (a private one).
    fn user_get_by_id(&self, id: Id) -> Call<'_, Option<User>>;
    fn user_list(&self, limit: u32) -> Call<'_, Vec<User>>;
    fn community_list(&self) -> Call<'_, Vec<Community>>;
    fn folder_get(&self, id: Id) -> Call<'_, Folder>;
    fn folder_children(&self, id: Id) -> Call<'_, Children>;
    /// Fails with [`super::Error::TooLarge`] when the answer is longer than `limit` bytes.
    fn folder_children_within(&self, id: Id, limit: usize) -> Call<'_, Children>;
    /// With its head revision only.
    fn item_get(&self, id: Id) -> Call<'_, Item>;
    /// With every revision, oldest first.
    fn item_get_history(&self, id: Id) -> Call<'_, Item>;
    /// The items named exactly `name` that the caller may read.
    fn item_search_by_name<'a>(&'a self, name: &'a str) -> Call<'a, Vec<Item>>;
    /// The modules the server has enabled (`midas.modules.list`).
    fn modules_list(&self) -> Call<'_, Vec<String>>;
    /// At most `limit` items the caller may read that match the Lucene `query`
    /// (`midas.solr.search.advanced`, where the `solr` module is enabled).
    fn solr_search_advanced<'a>(&'a self, query: &'a str, limit: u32) -> Call<'a, Vec<Item>>;
    /// The folders the caller may read from the top down to the object `uuid` (an item itself
    /// left out).
    fn folders_from_root<'a>(&'a self, uuid: &'a str) -> Call<'a, Vec<Folder>>;
    /// Of the head revision; empty for an item without revisions.
    fn item_get_metadata(&self, id: Id) -> Call<'_, Vec<MetadataValue>>;
    /// Bytes `[offset, size)` of a bitstream of `size` bytes.
    fn download(&self, bitstream_id: Id, offset: u64, size: u64) -> Call<'_, ByteStream>;
    /// [`MidasApi::download`] for a reader that wants only the first `wanted` bytes (when
    /// given) and then drops the stream.
    fn download_some(
        &self,
        bitstream_id: Id,
        offset: u64,
        size: u64,
        wanted: Option<u64>,
    ) -> Call<'_, ByteStream>;
    /// The first bytes of a bitstream of `size` bytes, sparing the wire what a program may never
    /// read (see [`Client::download_head`]); the caller drops the stream after the bytes it
    /// wants.
    fn download_head(&self, bitstream_id: Id, size: u64) -> Call<'_, ByteStream> {
        self.download(bitstream_id, 0, size)
    }
    fn folder_create<'a>(&'a self, parent: Id, name: &'a str) -> Call<'a, Folder>;
    fn folder_rename<'a>(&'a self, folder_uuid: &'a str, name: &'a str) -> Call<'a, Folder>;
    fn folder_move(&self, id: Id, dst: Id) -> Call<'_, Folder>;
    fn folder_delete(&self, id: Id) -> Call<'_, ()>;
    fn item_create<'a>(&'a self, parent: Id, name: &'a str) -> Call<'a, Item>;
    fn item_rename<'a>(
        &'a self,
        item_uuid: &'a str,
        name: &'a str,
        rename_bitstream: bool,
    ) -> Call<'a, Item>;
    fn item_move(&self, id: Id, src: Id, dst: Id) -> Call<'_, Item>;
    fn item_set_public(&self, id: Id, public: bool) -> Call<'_, ()>;
    fn folder_set_privacy_recursive(&self, id: Id, public: bool) -> Call<'_, Changed>;
    /// The folder alone, not what is in it.
    fn folder_set_public(&self, id: Id, public: bool) -> Call<'_, Changed>;
    fn item_delete(&self, id: Id) -> Call<'_, ()>;
    fn item_set_metadata<'a>(
        &'a self,
        id: Id,
        element: &'a str,
        qualifier: &'a str,
        value: &'a str,
    ) -> Call<'a, ()>;
    fn item_delete_metadata<'a>(
        &'a self,
        id: Id,
        element: &'a str,
        qualifier: &'a str,
    ) -> Call<'a, ()>;
    fn bitstream_rename<'a>(&'a self, id: Id, name: &'a str) -> Call<'a, ()>;
    fn bitstream_delete(&self, id: Id) -> Call<'_, ()>;
    /// None when the server deduplicated the file by `checksum`.
    fn upload_token<'a>(
        &'a self,
        item_id: Id,
        filename: &'a str,
        checksum: Option<&'a str>,
    ) -> Call<'a, Option<String>>;
    /// A new item in `folder` and a token to upload into it.
    fn upload_token_new_item<'a>(&'a self, folder: Id, filename: &'a str)
        -> Call<'a, (Id, String)>;
    fn upload_offset<'a>(&'a self, upload_token: &'a str) -> Call<'a, u64>;
    /// Bytes `[offset, length)` of `file`, for an upload of `length` bytes in all.
    #[allow(clippy::too_many_arguments)] // the wire call's own parameters
    fn upload_perform<'a>(
        &'a self,
        upload_token: &'a str,
        item_id: Id,
        filename: &'a str,
        file: &'a Path,
        offset: u64,
        length: u64,
        revision: UploadRevision,
    ) -> Call<'a, Item>;
    /// One part of an upload whose length is not known yet: the bytes the server holds after it.
    fn upload_perform_part<'a>(&'a self, part: &'a UploadPart<'_>) -> Call<'a, u64>;
}

impl MidasApi for Client {
    fn base_url(&self) -> &str {
        Client::base_url(self)
    }
    fn user_get_by_name<'a>(&'a self, first: &'a str, last: &'a str) -> Call<'a, Option<User>> {
        Box::pin(Client::user_get_by_name(self, first, last))
    }
    fn user_get_by_id(&self, id: Id) -> Call<'_, Option<User>> {
        Box::pin(Client::user_get_by_id(self, id))
    }
    fn user_list(&self, limit: u32) -> Call<'_, Vec<User>> {
        Box::pin(Client::user_list(self, limit))
    }
    fn community_list(&self) -> Call<'_, Vec<Community>> {
        Box::pin(Client::community_list(self))
    }
    fn folder_get(&self, id: Id) -> Call<'_, Folder> {
        Box::pin(Client::folder_get(self, id))
    }
    fn folder_children(&self, id: Id) -> Call<'_, Children> {
        Box::pin(Client::folder_children(self, id))
    }
    fn folder_children_within(&self, id: Id, limit: usize) -> Call<'_, Children> {
        Box::pin(Client::folder_children_within(self, id, limit))
    }
    fn item_get(&self, id: Id) -> Call<'_, Item> {
        Box::pin(Client::item_get(self, id))
    }
    fn item_get_history(&self, id: Id) -> Call<'_, Item> {
        Box::pin(Client::item_get_history(self, id))
    }
    fn item_search_by_name<'a>(&'a self, name: &'a str) -> Call<'a, Vec<Item>> {
        Box::pin(Client::item_search_by_name(self, name))
    }
    fn modules_list(&self) -> Call<'_, Vec<String>> {
        Box::pin(Client::modules_list(self))
    }
    fn solr_search_advanced<'a>(&'a self, query: &'a str, limit: u32) -> Call<'a, Vec<Item>> {
        Box::pin(Client::solr_search_advanced(self, query, limit))
    }
    fn folders_from_root<'a>(&'a self, uuid: &'a str) -> Call<'a, Vec<Folder>> {
        Box::pin(Client::folders_from_root(self, uuid))
    }
    fn item_get_metadata(&self, id: Id) -> Call<'_, Vec<MetadataValue>> {
        Box::pin(Client::item_get_metadata(self, id))
    }
    fn download(&self, bitstream_id: Id, offset: u64, size: u64) -> Call<'_, ByteStream> {
        Box::pin(Client::download(self, bitstream_id, offset, size))
    }
    fn download_some(
        &self,
        bitstream_id: Id,
        offset: u64,
        size: u64,
        wanted: Option<u64>,
    ) -> Call<'_, ByteStream> {
        Box::pin(Client::download_some(
            self,
            bitstream_id,
            offset,
            size,
            wanted,
        ))
    }

    fn download_head(&self, bitstream_id: Id, size: u64) -> Call<'_, ByteStream> {
        Box::pin(Client::download_head(self, bitstream_id, size))
    }
    fn folder_create<'a>(&'a self, parent: Id, name: &'a str) -> Call<'a, Folder> {
        Box::pin(Client::folder_create(self, parent, name))
    }
    fn folder_rename<'a>(&'a self, folder_uuid: &'a str, name: &'a str) -> Call<'a, Folder> {
        Box::pin(Client::folder_rename(self, folder_uuid, name))
    }
    fn folder_move(&self, id: Id, dst: Id) -> Call<'_, Folder> {
        Box::pin(Client::folder_move(self, id, dst))
    }
    fn folder_delete(&self, id: Id) -> Call<'_, ()> {
        Box::pin(Client::folder_delete(self, id))
    }
    fn item_create<'a>(&'a self, parent: Id, name: &'a str) -> Call<'a, Item> {
        Box::pin(Client::item_create(self, parent, name))
    }
    fn item_rename<'a>(
        &'a self,
        item_uuid: &'a str,
        name: &'a str,
        rename_bitstream: bool,
    ) -> Call<'a, Item> {
        Box::pin(Client::item_rename(self, item_uuid, name, rename_bitstream))
    }
    fn item_move(&self, id: Id, src: Id, dst: Id) -> Call<'_, Item> {
        Box::pin(Client::item_move(self, id, src, dst))
    }
    fn item_set_public(&self, id: Id, public: bool) -> Call<'_, ()> {
        Box::pin(Client::item_set_public(self, id, public))
    }
    fn folder_set_privacy_recursive(&self, id: Id, public: bool) -> Call<'_, Changed> {
        Box::pin(Client::folder_set_privacy_recursive(self, id, public))
    }
    fn folder_set_public(&self, id: Id, public: bool) -> Call<'_, Changed> {
        Box::pin(Client::folder_set_public(self, id, public))
    }
    fn item_delete(&self, id: Id) -> Call<'_, ()> {
        Box::pin(Client::item_delete(self, id))
    }
    fn item_set_metadata<'a>(
        &'a self,
        id: Id,
        element: &'a str,
        qualifier: &'a str,
        value: &'a str,
    ) -> Call<'a, ()> {
        Box::pin(Client::item_set_metadata(
            self, id, element, qualifier, value,
        ))
    }
    fn item_delete_metadata<'a>(
        &'a self,
        id: Id,
        element: &'a str,
        qualifier: &'a str,
    ) -> Call<'a, ()> {
        Box::pin(Client::item_delete_metadata(self, id, element, qualifier))
    }
    fn bitstream_rename<'a>(&'a self, id: Id, name: &'a str) -> Call<'a, ()> {
        Box::pin(Client::bitstream_rename(self, id, name))
    }
    fn bitstream_delete(&self, id: Id) -> Call<'_, ()> {
        Box::pin(Client::bitstream_delete(self, id))
    }
    fn upload_token<'a>(
        &'a self,
        item_id: Id,
        filename: &'a str,
        checksum: Option<&'a str>,
    ) -> Call<'a, Option<String>> {
        Box::pin(Client::upload_token(self, item_id, filename, checksum))
    }
    fn upload_token_new_item<'a>(
        &'a self,
        folder: Id,
        filename: &'a str,
    ) -> Call<'a, (Id, String)> {
        Box::pin(Client::upload_token_new_item(self, folder, filename))
    }
    fn upload_offset<'a>(&'a self, upload_token: &'a str) -> Call<'a, u64> {
        Box::pin(Client::upload_offset(self, upload_token))
    }
    fn upload_perform<'a>(
        &'a self,
        upload_token: &'a str,
        item_id: Id,
        filename: &'a str,
        file: &'a Path,
        offset: u64,
        length: u64,
        revision: UploadRevision,
    ) -> Call<'a, Item> {
        Box::pin(Client::upload_perform(
            self,
            upload_token,
            item_id,
            filename,
            file,
            offset,
            length,
            revision,
        ))
    }
    fn upload_perform_part<'a>(&'a self, part: &'a UploadPart<'_>) -> Call<'a, u64> {
        Box::pin(Client::upload_perform_part(self, part))
    }
}
