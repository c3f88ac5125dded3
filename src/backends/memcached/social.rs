//! The v3 sets in memcached: contacts, the index of each client's groups,
//! the nodes watching each client, and who is invisible. Each set is one
//! item of lines, changed by CAS like a group ([`edit_lines`]), written
//! without a TTL (size memcached so that it never evicts, as for groups);
//! the invisible flag is an item with the flag's TTL.
//!
//! | key | lines |
//! | --- | --- |
//! | `<prefix>contacts:<client id>` | `client`'s contacts |
//! | `<prefix>groups-of:<client id>` | the groups `client` is a member of |
//! | `<prefix>watchers:<client id>` | node ids with sessions watching `client` |
//! | `<prefix>node:<node id>:watching` | the clients a node watches |
//! | `<prefix>invisible:<client id>` | ms since `client` is invisible |
//!
//! [`edit_lines`]: MemcachedPresence::edit_lines

use std::time::Duration;

use async_trait::async_trait;

use super::conn::{Meta, Reply, SetMode};
use super::{MemcachedPresence, unexpected};
use crate::presence::{ContactAdded, ContactStore, PresenceError, WatchStore};
use crate::protocol::{ClientId, GroupId, NodeId};

impl MemcachedPresence {
    fn contacts_key(&self, client: &ClientId) -> String {
        format!("{}contacts:{}", self.key_prefix, client)
    }

    pub(super) fn groups_of_key(&self, client: &ClientId) -> String {
        format!("{}groups-of:{}", self.key_prefix, client)
    }

    fn watchers_key(&self, client: &ClientId) -> String {
        format!("{}watchers:{}", self.key_prefix, client)
    }

    fn watching_key(&self, node: &NodeId) -> String {
        format!("{}node:{}:watching", self.key_prefix, node)
    }

    fn invisible_key(&self, client: &ClientId) -> String {
        format!("{}invisible:{}", self.key_prefix, client)
    }

    /// Adds `line` to the set item at `key` (or removes it).
    async fn set_line(&self, key: &str, line: &str, present: bool) -> Result<(), PresenceError> {
        self.edit_lines(key, key, |lines| {
            let there = lines.iter().any(|l| l == line);
            match (present, there) {
                (true, false) => {
                    lines.push(line.to_owned());
                    (true, ())
                }
                (false, true) => {
                    lines.retain(|l| l != line);
                    (true, ())
                }
                _ => (false, ()),
            }
        })
        .await
    }

    /// The lines of the set item at `key` (none when there is no item).
    async fn lines(&self, key: String) -> Result<Vec<String>, PresenceError> {
        match self.one(Meta::Get { key }).await? {
            Reply::Value { value, .. } => Ok(value.lines().map(str::to_owned).collect()),
            Reply::Miss => Ok(Vec::new()),
            other => Err(unexpected(&other)),
        }
    }

    /// Indexes (or unindexes) `group` among `client`'s groups.
    pub(super) async fn index_group(
        &self,
        client: &ClientId,
        group: &GroupId,
        member: bool,
    ) -> Result<(), PresenceError> {
        let key = self.groups_of_key(client);
        self.set_line(&key, group.as_str(), member).await
    }

    pub(super) async fn indexed_groups(
        &self,
        client: &ClientId,
    ) -> Result<Vec<GroupId>, PresenceError> {
        let lines = self.lines(self.groups_of_key(client)).await?;
        Ok(lines
            .iter()
            .filter_map(|g| GroupId::parse(g).ok())
            .collect())
    }
}

#[async_trait]
impl ContactStore for MemcachedPresence {
    async fn add_contact(
        &self,
        client: &ClientId,
        contact: &ClientId,
        max_contacts: usize,
    ) -> Result<ContactAdded, PresenceError> {
        let what = format!("contacts of {client}");
        self.edit_lines(&self.contacts_key(client), &what, |contacts| {
            if contacts.iter().any(|c| c == contact.as_str()) {
                (false, ContactAdded::Already)
            } else if contacts.len() >= max_contacts {
                (false, ContactAdded::Full)
            } else {
                contacts.push(contact.to_string());
                (true, ContactAdded::Added)
            }
        })
        .await
    }

    async fn remove_contact(
        &self,
        client: &ClientId,
        contact: &ClientId,
    ) -> Result<bool, PresenceError> {
        let what = format!("contacts of {client}");
        self.edit_lines(&self.contacts_key(client), &what, |contacts| {
            let before = contacts.len();
            contacts.retain(|c| c != contact.as_str());
            let removed = contacts.len() != before;
            (removed, removed)
        })
        .await
    }

    async fn contacts(&self, client: &ClientId) -> Result<Vec<ClientId>, PresenceError> {
        let lines = self.lines(self.contacts_key(client)).await?;
        lines
            .iter()
            .map(|c| {
                ClientId::parse(c).map_err(|e| PresenceError::Corrupt {
                    client: format!("contacts of {client}"),
                    why: format!("{c:?}: {e}"),
                })
            })
            .collect()
    }
}

#[async_trait]
impl WatchStore for MemcachedPresence {
    async fn add_watcher(&self, node: &NodeId, clients: &[ClientId]) -> Result<(), PresenceError> {
        for client in clients {
            self.set_line(&self.watchers_key(client), node.as_str(), true)
                .await?;
        }
        let index = self.watching_key(node);
        self.edit_lines(&index, &index, |lines| {
            let before = lines.len();
            for client in clients {
                if !lines.iter().any(|l| l == client.as_str()) {
                    lines.push(client.to_string());
                }
            }
            (lines.len() != before, ())
        })
        .await
    }

    async fn remove_watcher(
        &self,
        node: &NodeId,
        clients: &[ClientId],
    ) -> Result<(), PresenceError> {
        for client in clients {
            self.set_line(&self.watchers_key(client), node.as_str(), false)
                .await?;
        }
        let index = self.watching_key(node);
        self.edit_lines(&index, &index, |lines| {
            let before = lines.len();
            lines.retain(|l| !clients.iter().any(|c| c.as_str() == l));
            (lines.len() != before, ())
        })
        .await
    }

    /// One multi-get per server.
    async fn watchers(&self, clients: &[ClientId]) -> Result<Vec<Vec<NodeId>>, PresenceError> {
        let keys = clients.iter().map(|c| self.watchers_key(c)).collect();
        let replies = self.get_many(keys).await?;
        Ok(replies
            .into_iter()
            .map(|reply| match reply {
                Reply::Value { value, .. } => value
                    .lines()
                    .filter_map(|n| NodeId::parse(n).ok())
                    .collect(),
                _ => Vec::new(),
            })
            .collect())
    }

    async fn forget_watcher(&self, node: &NodeId) -> Result<(), PresenceError> {
        let index = self.watching_key(node);
        let watched: Vec<ClientId> = self
            .lines(index.clone())
            .await?
            .iter()
            .filter_map(|c| ClientId::parse(c).ok())
            .collect();
        for client in &watched {
            self.set_line(&self.watchers_key(client), node.as_str(), false)
                .await?;
        }
        self.edit_lines(&index, &index, |lines| {
            let had = !lines.is_empty();
            lines.clear();
            (had, ())
        })
        .await
    }

    async fn set_invisible(
        &self,
        client: &ClientId,
        since: Option<u64>,
        ttl: Duration,
    ) -> Result<(), PresenceError> {
        let key = self.invisible_key(client);
        let Some(since) = since else {
            // Visible again: the item goes (by CAS, as a set item would).
            return self
                .edit_lines(&key, &key, |lines| {
                    let had = !lines.is_empty();
                    lines.clear();
                    (had, ())
                })
                .await;
        };
        let set = Meta::Set {
            key,
            value: since.to_string(),
            ttl_secs: super::ttl_secs(ttl),
            mode: SetMode::Always,
        };
        match self.one(set).await? {
            Reply::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// One multi-get per server.
    async fn invisible(&self, clients: &[ClientId]) -> Result<Vec<Option<u64>>, PresenceError> {
        let keys = clients.iter().map(|c| self.invisible_key(c)).collect();
        let replies = self.get_many(keys).await?;
        Ok(replies
            .into_iter()
            .map(|reply| match reply {
                Reply::Value { value, .. } => value.trim().parse().ok(),
                _ => None,
            })
            .collect())
    }
}
