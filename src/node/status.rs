//! A node's status (`switchboard status`, the admin page,
//! `/api/v1/cluster`): this node's own, and every live node's, asked over
//! the bus at once.

use std::time::Duration;

use bytes::Bytes;

use super::Node;
use crate::protocol::NodeId;
use crate::protocol::requests::Request;
use crate::protocol::status::NodeStatus;

/// How long a peer has to answer a status request.
const PEER_ANSWER: Duration = Duration::from_secs(1);
/// How long the presence store has to answer this node's ping.
const PRESENCE_PING: Duration = Duration::from_millis(500);

/// This node as `switchboard status` and the admin page show it.
pub async fn of_this_node(node: &Node) -> NodeStatus {
    let ping = tokio::time::timeout(PRESENCE_PING, node.presence().ping());
    let presence_ok = matches!(ping.await, Ok(Ok(())));
    let (router, metrics) = (node.router(), node.metrics());
    NodeStatus {
        presence_ok,
        bus_ok: node.bus().connected(),
        node: node.id().clone(),
        started_ms: router.liveness().me().started_ms,
        sessions: router.hub().len() as u64,
        detached: node.resumption().detached_sessions() as u64,
        in_flight: router.outcomes().in_flight() as u64,
        sends: metrics
            .sends_by_branch()
            .into_iter()
            .map(|(branch, n)| (branch.to_owned(), n))
            .collect(),
        offline_receipts: metrics.offline_receipts(),
        presence: node.presence().backend().to_owned(),
        bus: node.bus().backend().to_owned(),
    }
}

/// Every live node's status, this one's included, sorted by node: the
/// others asked over the bus at once; a node that does not answer within
/// a second is left out.
pub async fn of_cluster(node: &Node) -> Vec<NodeStatus> {
    let payload = Bytes::from(serde_json::to_vec(&Request::Status).expect("serializable"));
    let peers: Vec<NodeId> = node
        .router()
        .liveness()
        .alive_nodes()
        .into_iter()
        .filter(|n| n != node.id())
        .collect();
    let asks = peers.iter().map(|peer| {
        let payload = payload.clone();
        async move {
            let answer = node.bus().request(peer, payload, PEER_ANSWER).await.ok()?;
            serde_json::from_slice::<NodeStatus>(&answer).ok()
        }
    });
    let mut all = vec![of_this_node(node).await];
    all.extend(
        futures_util::future::join_all(asks)
            .await
            .into_iter()
            .flatten(),
    );
    all.sort_by(|a, b| a.node.cmp(&b.node));
    all
}
