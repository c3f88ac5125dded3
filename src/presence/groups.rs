//! Groups (v2): each group's members, kept by the application through the
//! HTTP API, beside the session records in the same store.

use async_trait::async_trait;

use super::PresenceError;
use crate::protocol::{ClientId, GroupId};

/// What adding a member to a group did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberAdded {
    Added,
    /// It was a member already: nothing changed.
    Already,
    /// Not added: the group has the most members allowed.
    Full,
}

/// Group membership, as the group service and the API see it.
#[async_trait]
pub trait GroupStore: Send + Sync + 'static {
    /// Adds `client` to `group`, atomically refusing a new member once the
    /// group has `max_members`.
    async fn add_member(
        &self,
        group: &GroupId,
        client: &ClientId,
        max_members: usize,
    ) -> Result<MemberAdded, PresenceError>;

    /// Removes `client` from `group`; answers whether it was a member. The
    /// group goes with its last member.
    async fn remove_member(
        &self,
        group: &GroupId,
        client: &ClientId,
    ) -> Result<bool, PresenceError>;

    /// Every member of `group`, in no particular order; empty when it has
    /// none.
    async fn members(&self, group: &GroupId) -> Result<Vec<ClientId>, PresenceError>;

    /// The groups `client` is a member of (v3, for "members may watch each
    /// other"), in no particular order. Kept beside the members as an
    /// index that may lag a change by a moment (it is written after the
    /// membership); callers check membership in [`members`](Self::members)
    /// before they rely on it.
    async fn groups_of(&self, client: &ClientId) -> Result<Vec<GroupId>, PresenceError>;
}
