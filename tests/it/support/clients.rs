//! Talking to nodes as a client does, and waiting for what comes back.

use switchboard::node::Node;
use switchboard::protocol::{AckFrame, AckStatus, MessageFrame, ServerFrame};
use switchboard_client::{Client, ClientError, ConnectOptions, Event, Identity};

use super::reach::Reach;
use super::within;

/// `from` sends one message to `to`: the ack must name `branch`, and `to`
/// must receive it next.
pub async fn deliver(from: &mut Client, to: &mut Client, branch: AckStatus) {
    let recipient = to.welcome().client_id.clone();
    from.send(&recipient, &serde_json::json!("delivered?"), None, false)
        .await
        .unwrap();
    assert_eq!(ack_status(from).await, branch);
    match next_frame(to).await {
        ServerFrame::Message(MessageFrame { body, .. }) => assert_eq!(body, "delivered?"),
        other => panic!("{recipient} got {other:?} instead of the message"),
    }
}

/// [`deliver`] (remote) until `from`'s node has cached `to`'s route, and
/// keeps it. A change broadcast while a lookup is under way keeps that
/// lookup's answer out of the cache, so the first may not be enough; and
/// the broadcast of `to`'s own registration may reach `from`'s node only
/// after the route is cached, and empty it again. A reply from `to` comes
/// over the bus from `to`'s node after that broadcast, so a route still
/// cached once the reply is in stays cached.
pub async fn deliver_until_cached(from: &mut Client, to: &mut Client, node: &Node) {
    let client = switchboard::protocol::ClientId::parse(&to.welcome().client_id).unwrap();
    for _ in 0..20 {
        deliver(from, to, AckStatus::Remote).await;
        if node.router().cached_route(&client).is_none() {
            continue;
        }
        deliver(to, from, AckStatus::Remote).await;
        if node.router().cached_route(&client).is_some() {
            return;
        }
    }
    panic!("{client}'s route never stayed cached");
}

/// Waits until `node` no longer holds a cached route of `client` with
/// other than `devices` devices. A device that has just registered on
/// another node is missed by a send from `node` until the broadcast of its
/// registration arrives there (docs/protocol.md, "the route cache"); a
/// test that sends at once to every device waits for it here.
pub async fn heard_of_devices(node: &Node, client: &str, devices: usize) {
    let client = switchboard::protocol::ClientId::parse(client).unwrap();
    super::eventually("the node has heard of every device", || async {
        node.router()
            .cached_route(&client)
            .is_none_or(|route| route.len() == devices)
    })
    .await;
}

/// Connects `name` to `node` (authentication off).
pub async fn connect(node: &impl Reach, name: &str) -> Client {
    let identity = Identity::Name(name.into());
    within(connect_with(node, identity, &ConnectOptions::default()))
        .await
        .unwrap_or_else(|e| panic!("{name} cannot connect: {e}"))
}

/// Connects to `node` as `identity`, with `options`; the node's refusal
/// is an `Err`.
pub async fn connect_with(
    node: &impl Reach,
    identity: Identity,
    options: &ConnectOptions,
) -> Result<Client, ClientError> {
    Client::connect_over(node.open().await, &node.base_url(), identity, options).await
}

/// Connects `name` on `device` to `node` (authentication off).
pub async fn on_device(node: &impl Reach, name: &str, device: &str) -> Client {
    let options = ConnectOptions {
        device: Some(device.into()),
        ..Default::default()
    };
    within(connect_with(node, Identity::Name(name.into()), &options))
        .await
        .unwrap_or_else(|e| panic!("{name} on {device} cannot connect: {e}"))
}

/// Connects `name` to the node at `url` (authentication off).
pub async fn named(url: &str, name: &str) -> Client {
    within(Client::connect(url, Identity::Name(name.into())))
        .await
        .unwrap_or_else(|e| panic!("{name} cannot connect: {e}"))
}

/// The next event of `client`.
pub async fn next_event(client: &mut Client) -> Event {
    within(client.next_event()).await.expect("readable event")
}

/// The next frame of `client`; fails if the session closes instead.
pub async fn next_frame(client: &mut Client) -> ServerFrame {
    match next_event(client).await {
        Event::Frame(frame) => frame,
        Event::Closed { code, reason } => panic!("session closed ({code:?}): {reason}"),
    }
}

/// The next frame, which must be an ack.
pub async fn next_ack(client: &mut Client) -> AckFrame {
    match next_frame(client).await {
        ServerFrame::Ack(ack) => ack,
        other => panic!("expected an ack, got {other:?}"),
    }
}

/// The status of the next frame, which must be an ack.
pub async fn ack_status(client: &mut Client) -> AckStatus {
    next_ack(client).await.status
}

/// The next frame, which must be a message.
pub async fn message(client: &mut Client) -> MessageFrame {
    match next_frame(client).await {
        ServerFrame::Message(m) => m,
        other => panic!("expected a message, got {other:?}"),
    }
}

/// Waits until the session closes and returns the close code.
pub async fn closed_with(client: &mut Client) -> Option<u16> {
    loop {
        if let Event::Closed { code, .. } = next_event(client).await {
            return code;
        }
    }
}
