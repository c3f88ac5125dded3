//! How a test reaches a node, whichever kind it is: a node serving on a
//! loopback port in this process ([`RunningNode`]) or as a child process
//! ([`NodeProcess`]), or a node of the test bed
//! ([`BedNode`](super::bed::BedNode)), served over an in-memory pipe. The
//! kit's clients and HTTP helpers take any of them.

use async_trait::async_trait;
use switchboard::runtime::RunningNode;
use switchboard_client::Io;

use super::nodes::NodeProcess;

#[async_trait]
pub trait Reach: Sync {
    /// A new byte stream to the node's HTTP port.
    async fn open(&self) -> Box<dyn Io>;

    /// The node's address as a client names it (`ws://…`).
    fn base_url(&self) -> String;
}

async fn tcp(addr: std::net::SocketAddr) -> Box<dyn Io> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("the node accepts connections");
    let _ = stream.set_nodelay(true);
    Box::new(stream)
}

#[async_trait]
impl Reach for RunningNode {
    async fn open(&self) -> Box<dyn Io> {
        tcp(self.local_addr()).await
    }

    fn base_url(&self) -> String {
        format!("ws://{}", self.local_addr())
    }
}

#[async_trait]
impl Reach for NodeProcess {
    async fn open(&self) -> Box<dyn Io> {
        tcp(([127, 0, 0, 1], self.port()).into()).await
    }

    fn base_url(&self) -> String {
        self.ws_url()
    }
}
