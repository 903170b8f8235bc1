//! A remote member's transport: the browser's WebSocket is on another
//! node (the edge), which sends its text messages over the bus; what the
//! connection logic writes goes back the same way. To [`crate::conn`] it
//! looks like a socket.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use cluster::NodeId;
use cluster::bus::{Body, Dir, SeqOut};
use signal::ws::{self, Event};
use tokio::sync::mpsc;

use super::Cluster;
use crate::limits::ByteBudget;

/// What an edge sends a remote member.
#[derive(Debug)]
pub(crate) enum FromEdge {
    /// A text message from the browser.
    Text(String),
    /// The edge still has the connection (the answer to a ping).
    Pong,
}

/// Something to publish at the next flush.
enum Out {
    Text(String),
    Ping,
    Close(u16, String),
}

/// See the module documentation.
pub(crate) struct RemoteIo {
    cluster: Arc<Cluster>,
    edge: NodeId,
    conn: u64,
    rx: mpsc::Receiver<FromEdge>,
    /// The bytes waiting in `rx`, given back as they are taken.
    bytes: ByteBudget,
    /// Messages received and not yet handed out. Bounded by the link's
    /// inbox: `fill` takes one message at a time.
    inbox: VecDeque<String>,
    /// The message `next` handed out last (its text is borrowed).
    current: String,
    pong: bool,
    out: Vec<Out>,
    seq: SeqOut,
    /// The edge was told to close, or told us it closed.
    done: bool,
}

impl RemoteIo {
    pub(crate) fn new(
        cluster: Arc<Cluster>,
        edge: NodeId,
        conn: u64,
        rx: mpsc::Receiver<FromEdge>,
        bytes: ByteBudget,
    ) -> RemoteIo {
        RemoteIo {
            cluster,
            edge,
            conn,
            rx,
            bytes,
            inbox: VecDeque::new(),
            current: String::new(),
            pong: false,
            out: Vec::new(),
            seq: SeqOut::default(),
            done: false,
        }
    }

    /// Waits for the edge's next message. `Ok(0)`: the connection is gone
    /// (the edge said so, or its link was dropped).
    pub(crate) async fn fill(&mut self) -> io::Result<usize> {
        match self.rx.recv().await {
            Some(FromEdge::Text(t)) => {
                self.bytes.give(t.len());
                let n = t.len().max(1);
                self.inbox.push_back(t);
                Ok(n)
            }
            Some(FromEdge::Pong) => {
                self.pong = true;
                Ok(1)
            }
            // Gone: said so, or its link was dropped (a lost message, its
            // node's lease lapsed). The edge is told to close either way
            // (see Drop): harmless if it has.
            None => Ok(0),
        }
    }

    pub(crate) fn next(&mut self) -> Result<Option<Option<Event<'_>>>, ws::Error> {
        if std::mem::take(&mut self.pong) {
            return Ok(Some(Some(Event::Pong)));
        }
        match self.inbox.pop_front() {
            Some(t) => {
                self.current = t;
                Ok(Some(Some(Event::Text(&self.current))))
            }
            None => Ok(None),
        }
    }

    pub(crate) fn text(&mut self, text: &str) {
        self.out.push(Out::Text(text.to_owned()));
    }

    /// The edge answers for its connection, which its own pings keep alive.
    pub(crate) fn ping(&mut self) {
        self.out.push(Out::Ping);
    }

    pub(crate) fn close_frame(&mut self, close: Option<(u16, &str)>) {
        let (code, reason) = close.unwrap_or((ws::CLOSE_NORMAL, ""));
        self.out.push(Out::Close(code, reason.to_owned()));
    }

    pub(crate) fn has_input(&self) -> bool {
        self.pong || !self.inbox.is_empty()
    }

    pub(crate) fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// Queues what was written for the bus; fails if the bus is full (the
    /// connection then ends, and the edge is told to close).
    pub(crate) async fn flush(&mut self) -> io::Result<()> {
        for out in std::mem::take(&mut self.out) {
            if self.done {
                break;
            }
            let body = match &out {
                Out::Text(t) => Body::Text(t),
                Out::Ping => Body::Ping,
                Out::Close(code, reason) => {
                    self.done = true;
                    Body::Close(*code, reason)
                }
            };
            let seq = self.seq.take();
            if !self.cluster.publish(&self.edge, Dir::ToEdge, self.conn, body, seq) {
                self.done = true;
                return Err(io::Error::other("the bus is full"));
            }
        }
        Ok(())
    }

    pub(crate) async fn close(&mut self, close: Option<(u16, &str)>, _linger: Duration) {
        self.close_frame(close);
        let _ = self.flush().await;
    }

    pub(crate) fn release_idle(&mut self) {
        self.inbox.shrink_to_fit();
        self.current = String::new();
    }
}

impl Drop for RemoteIo {
    fn drop(&mut self) {
        self.cluster.remove_remote(&self.edge, self.conn);
        if !self.done {
            // Ended without a close the edge heard of (the bus was full, a
            // message was lost): the browser must reconnect.
            let (code, reason) = super::CLOSE_MOVED;
            let seq = self.seq.take();
            self.cluster.publish(&self.edge, Dir::ToEdge, self.conn, Body::Close(code, reason), seq);
        }
    }
}
