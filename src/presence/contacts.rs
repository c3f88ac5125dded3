//! Contacts (v3): whom a client may watch, kept by the application through
//! the HTTP API (`PUT /api/v1/contacts/<client>/<contact>`), stored beside
//! groups. One way: `client` may watch `contact`.

use async_trait::async_trait;

use super::PresenceError;
use crate::protocol::ClientId;

/// What adding a contact did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContactAdded {
    Added,
    /// It was a contact already: nothing changed.
    Already,
    /// Not added: the client has the most contacts allowed.
    Full,
}

/// Contacts, as the watch service and the API see them.
#[async_trait]
pub trait ContactStore: Send + Sync + 'static {
    /// Makes `contact` a contact of `client`, atomically refusing a new one
    /// once `client` has `max_contacts`.
    async fn add_contact(
        &self,
        client: &ClientId,
        contact: &ClientId,
        max_contacts: usize,
    ) -> Result<ContactAdded, PresenceError>;

    /// Removes `contact` from `client`'s contacts; answers whether it was
    /// one.
    async fn remove_contact(
        &self,
        client: &ClientId,
        contact: &ClientId,
    ) -> Result<bool, PresenceError>;

    /// Every contact of `client`, in no particular order.
    async fn contacts(&self, client: &ClientId) -> Result<Vec<ClientId>, PresenceError>;
}
