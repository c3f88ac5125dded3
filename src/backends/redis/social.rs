//! The v3 sets in Redis, beside the records: contacts, the index of each
//! client's groups, the nodes watching each client, and who is invisible.
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `<prefix>contacts:<client id>` | set | `client`'s contacts (whom it may watch) |
//! | `<prefix>groups-of:<client id>` | set | the groups `client` is a member of: the index of `group:<group>` |
//! | `<prefix>watchers:<client id>` | set | node ids with sessions watching `client` |
//! | `<prefix>node:<node id>:watching` | set | the clients a node watches: the index that lets a dead node's watches be forgotten without a scan |
//! | `<prefix>invisible:<client id>` | string, PX | ms since `client` is invisible |
//!
//! Each command touches one key, so on a Redis Cluster each goes to its own
//! slot. Adding a contact checks the cap and adds in one script (the same
//! one as a group member). The indexes are written after the sets they
//! index (and removed before them), so that what they name is at worst
//! stale, never missing: readers check the set itself before relying on an
//! index entry.

use std::time::Duration;

use async_trait::async_trait;
use redis::Cmd;

use super::{RedisPresence, group_error, store_error};
use crate::presence::{ContactAdded, ContactStore, PresenceError, WatchStore};
use crate::protocol::{ClientId, GroupId, NodeId};

impl RedisPresence {
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

    /// Indexes (or unindexes) `group` among `client`'s groups.
    pub(super) async fn index_group(
        &self,
        client: &ClientId,
        group: &GroupId,
        member: bool,
    ) -> Result<(), PresenceError> {
        redis::cmd(if member { "SADD" } else { "SREM" })
            .arg(self.groups_of_key(client))
            .arg(group.as_str())
            .query_async::<i64>(&mut self.conn.clone())
            .await
            .map(drop)
            .map_err(|e| group_error(group, e))
    }

    /// Runs one command per client, in one batch.
    async fn each(&self, commands: Vec<Cmd>) -> Result<Vec<redis::Value>, PresenceError> {
        self.conn
            .batch(commands)
            .await
            .map_err(|e| PresenceError::caused("Redis", e))
    }
}

/// A set's members as ids of `T` (corrupt members are the store's problem,
/// said so).
fn ids<T>(
    what: &str,
    members: Vec<String>,
    parse: impl Fn(&str) -> Result<T, crate::protocol::InvalidId>,
) -> Result<Vec<T>, PresenceError> {
    members
        .iter()
        .map(|m| {
            parse(m).map_err(|e| PresenceError::Corrupt {
                client: what.to_owned(),
                why: format!("member {m:?}: {e}"),
            })
        })
        .collect()
}

#[async_trait]
impl ContactStore for RedisPresence {
    async fn add_contact(
        &self,
        client: &ClientId,
        contact: &ClientId,
        max_contacts: usize,
    ) -> Result<ContactAdded, PresenceError> {
        let added: i64 = self
            .add_member
            .key(self.contacts_key(client))
            .arg(contact.as_str())
            .arg(max_contacts)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(|e| store_error(client, e))?;
        Ok(match added {
            1 => ContactAdded::Added,
            0 => ContactAdded::Already,
            _ => ContactAdded::Full,
        })
    }

    async fn remove_contact(
        &self,
        client: &ClientId,
        contact: &ClientId,
    ) -> Result<bool, PresenceError> {
        redis::cmd("SREM")
            .arg(self.contacts_key(client))
            .arg(contact.as_str())
            .query_async::<i64>(&mut self.conn.clone())
            .await
            .map(|removed| removed == 1)
            .map_err(|e| store_error(client, e))
    }

    async fn contacts(&self, client: &ClientId) -> Result<Vec<ClientId>, PresenceError> {
        let members: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.contacts_key(client))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|e| store_error(client, e))?;
        ids(&format!("contacts of {client}"), members, ClientId::parse)
    }
}

#[async_trait]
impl WatchStore for RedisPresence {
    async fn add_watcher(&self, node: &NodeId, clients: &[ClientId]) -> Result<(), PresenceError> {
        if clients.is_empty() {
            return Ok(());
        }
        // The sets first, then the node's index of them (see the module
        // comment).
        let sets = clients
            .iter()
            .map(|client| {
                let mut cmd = redis::cmd("SADD");
                cmd.arg(self.watchers_key(client)).arg(node.as_str());
                cmd
            })
            .collect();
        self.each(sets).await?;
        let mut index = redis::cmd("SADD");
        index.arg(self.watching_key(node));
        for client in clients {
            index.arg(client.as_str());
        }
        self.each(vec![index]).await.map(drop)
    }

    async fn remove_watcher(
        &self,
        node: &NodeId,
        clients: &[ClientId],
    ) -> Result<(), PresenceError> {
        if clients.is_empty() {
            return Ok(());
        }
        let sets = clients
            .iter()
            .map(|client| {
                let mut cmd = redis::cmd("SREM");
                cmd.arg(self.watchers_key(client)).arg(node.as_str());
                cmd
            })
            .collect();
        self.each(sets).await?;
        let mut index = redis::cmd("SREM");
        index.arg(self.watching_key(node));
        for client in clients {
            index.arg(client.as_str());
        }
        self.each(vec![index]).await.map(drop)
    }

    async fn watchers(&self, clients: &[ClientId]) -> Result<Vec<Vec<NodeId>>, PresenceError> {
        let commands = clients
            .iter()
            .map(|client| {
                let mut cmd = redis::cmd("SMEMBERS");
                cmd.arg(self.watchers_key(client));
                cmd
            })
            .collect();
        let replies = self.each(commands).await?;
        clients
            .iter()
            .zip(replies)
            .map(|(client, reply)| {
                let members: Vec<String> =
                    redis::from_redis_value(reply).map_err(|e| store_error(client, e.into()))?;
                ids(&format!("watchers of {client}"), members, NodeId::parse)
            })
            .collect()
    }

    async fn forget_watcher(&self, node: &NodeId) -> Result<(), PresenceError> {
        let index = self.watching_key(node);
        let watched: Vec<String> = redis::cmd("SMEMBERS")
            .arg(&index)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|e| PresenceError::caused("Redis", e))?;
        let clients: Vec<ClientId> = watched
            .iter()
            .filter_map(|c| ClientId::parse(c).ok())
            .collect();
        for chunk in clients.chunks(512) {
            let sets = chunk
                .iter()
                .map(|client| {
                    let mut cmd = redis::cmd("SREM");
                    cmd.arg(self.watchers_key(client)).arg(node.as_str());
                    cmd
                })
                .collect();
            self.each(sets).await?;
        }
        let mut drop_index = redis::cmd("DEL");
        drop_index.arg(index);
        self.each(vec![drop_index]).await.map(drop)
    }

    async fn set_invisible(
        &self,
        client: &ClientId,
        since: Option<u64>,
        ttl: Duration,
    ) -> Result<(), PresenceError> {
        let cmd = match since {
            Some(since) => {
                let mut cmd = redis::cmd("SET");
                let ttl = ttl.as_millis().max(1) as u64;
                cmd.arg(self.invisible_key(client))
                    .arg(since)
                    .arg("PX")
                    .arg(ttl);
                cmd
            }
            None => {
                let mut cmd = redis::cmd("DEL");
                cmd.arg(self.invisible_key(client));
                cmd
            }
        };
        cmd.query_async::<redis::Value>(&mut self.conn.clone())
            .await
            .map(drop)
            .map_err(|e| store_error(client, e))
    }

    async fn invisible(&self, clients: &[ClientId]) -> Result<Vec<Option<u64>>, PresenceError> {
        let commands = clients
            .iter()
            .map(|client| {
                let mut cmd = redis::cmd("GET");
                cmd.arg(self.invisible_key(client));
                cmd
            })
            .collect();
        let replies = self.each(commands).await?;
        clients
            .iter()
            .zip(replies)
            .map(|(client, reply)| {
                let since: Option<u64> =
                    redis::from_redis_value(reply).map_err(|e| store_error(client, e.into()))?;
                Ok(since)
            })
            .collect()
    }
}
