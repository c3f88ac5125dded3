//! Backend hooks (v3): the application's backend decides, before a
//! connection is admitted and before a client's message is routed,
//! whether it goes ahead, and may rewrite the message.
//!
//! This is a port: the routing core's `Gate` service sees the
//! [`HookBackend`] trait (what to ask, what came back); the HTTP backend
//! (`--hook-url`, signed JSON POSTs) implements it in [`crate::backends`].
//! The gate owns what the port does not: which hooks are on, the bound on
//! calls at once, the timeout, and what a failure means (`closed` or
//! `open`).

use std::net::SocketAddr;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::protocol::{ClientId, DeviceId, GroupId, NodeId};

/// What the `connect` hook is asked.
#[derive(Debug, Serialize)]
pub struct ConnectCall<'a> {
    pub hook: &'static str,
    pub client_id: &'a ClientId,
    pub device: &'a DeviceId,
    pub node: &'a NodeId,
    pub remote_addr: Option<SocketAddr>,
    /// The token's claims, when the node checks tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claims: Option<&'a serde_json::Value>,
}

/// What the backend said about a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectVerdict {
    Allow,
    /// The upgrade is answered with `status` (400 to 499) and
    /// `{"error": error, "message": message}`.
    Refuse {
        status: u16,
        error: String,
        message: String,
    },
}

/// Whom a message is for, as the `send` hook is told.
#[derive(Debug, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SendTo<'a> {
    To(&'a ClientId),
    Group(&'a GroupId),
}

/// What the `send` hook is asked.
#[derive(Debug, Serialize)]
pub struct SendCall<'a> {
    pub hook: &'static str,
    pub msg_id: Uuid,
    pub from: &'a ClientId,
    pub device: &'a DeviceId,
    #[serde(flatten)]
    pub to: SendTo<'a>,
    pub body: &'a RawValue,
}

/// What the backend said about a message.
#[derive(Debug, Clone)]
pub enum SendVerdict {
    Allow,
    /// Route it with this body instead (not yet checked against the body
    /// rules: the gate does that).
    Rewrite(Box<RawValue>),
    /// Nothing is routed or stored; the client gets `rejected` with
    /// `reason` (the backend's `error`) and `message`.
    Refuse {
        reason: String,
        message: String,
    },
}

/// Why a hook call gave no usable answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HookError {
    #[error("no answer within the timeout")]
    Timeout,
    #[error("answered with status {0}")]
    Status(u16),
    #[error("answered with something that is not a hook answer: {0}")]
    Garbage(String),
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// Every call slot stayed taken for the whole timeout.
    #[error("too many calls waiting (--hook-concurrency) for the whole timeout")]
    Busy,
}

impl HookError {
    /// The metric label of its cause.
    pub fn cause(&self) -> &'static str {
        match self {
            HookError::Timeout => "timeout",
            HookError::Status(_) => "status",
            HookError::Garbage(_) => "garbage",
            HookError::Unreachable(_) => "unreachable",
            HookError::Busy => "busy",
        }
    }
}

#[async_trait]
pub trait HookBackend: Send + Sync + 'static {
    async fn connect(&self, call: &ConnectCall<'_>) -> Result<ConnectVerdict, HookError>;

    async fn send(&self, call: &SendCall<'_>) -> Result<SendVerdict, HookError>;
}
