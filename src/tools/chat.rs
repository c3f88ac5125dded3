//! `switchboard chat`: a line-based terminal client, for trying a node
//! without writing one.
//!
//! ```text
//! $ switchboard chat --url ws://127.0.0.1:8080 --as alice --device laptop
//! connected: you are alice on device laptop, node node-a; type @<client id> <message>, Ctrl-D to quit
//! @bob hello
//! [1] -> bob: remote (2 sessions)
//! [1] -> bob/phone: delivered
//! [1] -> bob/tab: delivered
//! bob: hi alice
//! you (on another device) -> bob: see you
//! #team lunch?
//! [2] -> #team: fanout (1 local, 3 remote, 2 offline; 1 hop)
//! #team carol: yes
//! /watch bob carol
//! watching bob, carol
//! bob is online (laptop, phone)
//! carol is offline (last seen 2026-12-07 09:14:02 UTC)
//! bob is typing…
//! /history bob
//! #1 alice -> bob: hello
//! #2 bob: hi alice
//! bob read up to #2
//! ```
//!
//! A line `@bob hello` sends `{"text":"hello"}` to bob with a receipt asked
//! for; `#team hello` sends it to the group team (no `delivered` receipts
//! for groups; `offline` ones name the member's session); a line without
//! `@` or `#` goes to whoever was written to last. What the
//! node says comes out as it arrives: the branch each message took, its
//! receipt, incoming messages, errors. Ctrl-D or Ctrl-C closes the session
//! normally (after the outstanding acks, for at most two seconds).
//!
//! Presence (v3): `/watch bob carol` shows when they come and go (and on
//! which devices), `/unwatch bob` stops, `/invisible` and `/visible` hide
//! you from your watchers or show you again. "typing…" signals to you are
//! shown as they come; `/typing bob` sends one (a terminal cannot see
//! keystrokes before Enter).
//!
//! History (v3, on a node with `--history`): `/history bob` (or
//! `/history #team`) prints the conversation's last 20 messages with their
//! `cseq`s and marks them read; `/conversations` lists them with unread
//! counts; when someone reads what you sent, `bob read up to #7` shows.
//!
//! The session is in acks mode: when its node goes away (a drain says
//! 1001, or the connection drops), the chat reconnects (to the next of
//! `--url a,b,…`, with backoff) and resumes the session, so nothing sent
//! to you meanwhile is lost; it prints `reconnected to node …`.

use std::collections::HashMap;
use std::time::Duration;

use clap::Args;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::signal::unix::{SignalKind, signal};
use uuid::Uuid;

use switchboard::protocol::{
    AckStatus, ClientId, GroupId, MessageFrame, PageRange, ReceiptStatus, ServerFrame, Shown,
    Thread,
};
use switchboard_client::{ConnectOptions, Happening, Identity, ResumingClient, To};

#[derive(Debug, Clone, Args)]
pub struct ChatArgs {
    /// The node to connect to; a comma-separated list to go on at the next
    /// one when a node goes away (the session resumes there: acks mode).
    #[arg(long, default_value = "ws://127.0.0.1:8080")]
    pub url: String,

    /// Your client id, on a node with authentication off.
    #[arg(long = "as", value_name = "CLIENT_ID", conflicts_with = "token")]
    pub name: Option<String>,

    /// A token (`switchboard token <client id>`), on a node that requires one.
    #[arg(long, env = "SWITCHBOARD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// This session's device: your other devices stay online, and see what
    /// you send here. A new session of the same device replaces this one.
    #[arg(long, default_value = "terminal")]
    pub device: String,
}

/// How long a closing client waits for the acks of what it sent.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Runs the chat until the user quits or the node closes the session;
/// returns the process exit code.
pub async fn run(args: ChatArgs) -> i32 {
    let identity = match (args.name, args.token) {
        (Some(name), None) => move || Identity::Name(name.clone()),
        (None, Some(token)) => {
            return run_as(args.url, args.device, move || {
                Identity::Token(token.clone())
            })
            .await;
        }
        _ => {
            eprintln!("switchboard chat: say who you are: --as <client id>, or --token <token>");
            return 2;
        }
    };
    run_as(args.url, args.device, identity).await
}

async fn run_as(
    url: String,
    device: String,
    identity: impl FnMut() -> Identity + Send + 'static,
) -> i32 {
    // Listening from the start: a Ctrl-C before the first poll of a lazily
    // registered handler would kill the process without a clean close.
    let mut interrupted = match signal(SignalKind::interrupt()) {
        Ok(interrupted) => interrupted,
        Err(e) => {
            eprintln!("switchboard chat: cannot listen for Ctrl-C: {e}");
            return 1;
        }
    };
    let options = ConnectOptions {
        device: Some(device),
        ..ConnectOptions::default()
    };
    let urls = url.split(',').map(|u| u.trim().to_owned()).collect();
    let mut client = match ResumingClient::connect(urls, identity, options).await {
        Ok(client) => client,
        Err(e) => {
            eprintln!("switchboard chat: {e}");
            return 1;
        }
    };
    let mut out = Output::new();
    let welcome = client.welcome().clone();
    out.say(&format!(
        "connected: you are {} on device {}, node {}; type @<client id> <message>, Ctrl-D to quit",
        welcome.client_id, welcome.device, welcome.node
    ))
    .await;

    let mut chat = Chat {
        me: welcome.client_id.clone(),
        ..Chat::default()
    };
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(line)) => {
                    if line.trim() == "/quit" {
                        break;
                    }
                    if let Err(e) = chat.typed(&line, &mut client, &mut out).await {
                        out.say(&format!("disconnected: {e}")).await;
                        return 1;
                    }
                }
                // Ctrl-D, or the input ended.
                Ok(None) | Err(_) => break,
            },
            event = client.next() => match event {
                Ok(Happening::Frame(frame)) => chat.heard(frame, &mut out).await,
                Ok(Happening::Reconnected { resumed: true, node }) => {
                    out.say(&format!("reconnected to node {node}: session resumed, nothing lost")).await;
                }
                Ok(Happening::Reconnected { resumed: false, node }) => {
                    out.say(&format!("reconnected to node {node}: a new session (what was sent to the old one meanwhile was answered offline)")).await;
                }
                Err(e) => {
                    out.say(&format!("disconnected: {e}")).await;
                    return 1;
                }
            },
            _ = interrupted.recv() => break,
        }
    }

    // Leaving: collect the acks still owed, then close normally.
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        while !chat.unacked.is_empty() {
            match client.next().await {
                Ok(Happening::Frame(frame)) => chat.heard(frame, &mut out).await,
                _ => break,
            }
        }
    })
    .await;
    let _ = tokio::time::timeout(CLOSE_GRACE, client.close()).await;
    out.say("bye").await;
    0
}

/// What was sent and not yet settled.
#[derive(Default)]
struct Chat {
    /// This client's id (its own read receipts are not news).
    me: String,
    next_id: u64,
    /// `bob`, or `#team` for a group.
    last_to: Option<String>,
    /// Frame id -> recipient, until the ack.
    unacked: HashMap<String, String>,
    /// msg_id -> (frame id, recipient, sessions still to hear of), until
    /// every session's receipt.
    awaiting_receipt: HashMap<Uuid, (String, String, u32)>,
}

impl Chat {
    async fn typed(
        &mut self,
        line: &str,
        client: &mut ResumingClient,
        out: &mut Output,
    ) -> Result<(), switchboard_client::ClientError> {
        let line = line.trim();
        if line.is_empty() {
            return Ok(());
        }
        if let Some(command) = line.strip_prefix('/') {
            return self.command(command, client, out).await;
        }
        let addressed = line
            .strip_prefix('@')
            .map(|rest| (rest, ""))
            .or_else(|| line.strip_prefix('#').map(|rest| (rest, "#")));
        let (to, text) = match addressed {
            Some((rest, mark)) => match rest.split_once(char::is_whitespace) {
                Some((to, text)) if !text.trim().is_empty() => (format!("{mark}{to}"), text.trim()),
                _ => {
                    out.note("write @<client id> <message>, or #<group> <message>")
                        .await;
                    return Ok(());
                }
            },
            None => match &self.last_to {
                Some(to) => (to.clone(), line),
                None => {
                    out.note("write @<client id> <message> (later lines go to the same client)")
                        .await;
                    return Ok(());
                }
            },
        };
        self.next_id += 1;
        let id = self.next_id.to_string();
        let (dest, receipt) = match to.strip_prefix('#') {
            Some(group) => (To::Group(group), false),
            None => (To::Client(&to), true),
        };
        client
            .send_to(
                dest,
                &serde_json::json!({ "text": text }),
                Some(&id),
                receipt,
            )
            .await?;
        self.unacked.insert(id, to.clone());
        self.last_to = Some(to);
        Ok(())
    }

    /// `/watch`, `/unwatch`, `/invisible`, `/visible`, `/typing` (v3).
    async fn command(
        &mut self,
        command: &str,
        client: &mut ResumingClient,
        out: &mut Output,
    ) -> Result<(), switchboard_client::ClientError> {
        let mut words = command.split_whitespace();
        let verb = words.next().unwrap_or_default();
        let names: Vec<&str> = words.collect();
        let answered = match (verb, names.as_slice()) {
            ("watch", [_, ..]) => client.watch(&names).await.map(|w| {
                let mut said = format!("watching {}", w.clients.join(", "));
                if !w.denied.is_empty() {
                    said.push_str(&format!("; not allowed to watch {}", w.denied.join(", ")));
                }
                said
            }),
            ("unwatch", [_, ..]) => client
                .unwatch(&names)
                .await
                .map(|()| format!("no longer watching {}", names.join(", "))),
            ("invisible", []) => client
                .set_visible(false)
                .await
                .map(|()| "you are invisible: you look offline to your watchers".to_owned()),
            ("visible", []) => client
                .set_visible(true)
                .await
                .map(|()| "you are visible again".to_owned()),
            ("history", [name]) => {
                let thread = match name.strip_prefix('#') {
                    Some(group) => GroupId::parse(group).map(Thread::Group),
                    None => ClientId::parse(name).map(Thread::With),
                };
                let Ok(thread) = thread else {
                    out.say(&format!("{name} is not a client id or #group"))
                        .await;
                    return Ok(());
                };
                match client.history(&thread, PageRange::Latest, 20).await {
                    Ok(page) => {
                        for m in &page.messages {
                            out.say(&history_line(m)).await;
                        }
                        if let Some(last) = page.messages.last().and_then(|m| m.cseq) {
                            client.mark_read(&thread, last).await?;
                        }
                        Ok("end of history".to_owned())
                    }
                    Err(e) => Err(e),
                }
            }
            ("conversations", []) => match client.conversations(None, 50).await {
                Ok(list) => {
                    for item in &list.items {
                        let name = item
                            .with
                            .clone()
                            .or_else(|| item.group.as_ref().map(|g| format!("#{g}")))
                            .unwrap_or_default();
                        out.say(&format!(
                            "{name}: {} unread (last #{}: {})",
                            item.unread,
                            item.cseq,
                            text_of(&item.last.body)
                        ))
                        .await;
                    }
                    Ok(format!("{} conversation(s)", list.items.len()))
                }
                Err(e) => Err(e),
            },
            ("typing", [to]) => {
                let to = To::Client(to);
                client
                    .signal(to, &serde_json::json!({"typing": true}))
                    .await?;
                return Ok(());
            }
            _ => {
                out.note("commands: /watch <client id>…, /unwatch <client id>…, /invisible, /visible, /typing <client id>, /history <client id>|#<group>, /conversations, /quit")
                    .await;
                return Ok(());
            }
        };
        match answered {
            Ok(said) => out.say(&said).await,
            Err(switchboard_client::ClientError::Rejected { code, message, .. }) => {
                out.say(&format!("error {}: {message}", code.as_str()))
                    .await;
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }

    async fn heard(&mut self, frame: ServerFrame, out: &mut Output) {
        match frame {
            ServerFrame::Read(r) if r.by != self.me => {
                out.say(&format!("{} read up to #{}", r.by, r.upto)).await;
            }
            ServerFrame::Presence(p) => {
                let line = match (p.state, p.last_seen) {
                    (Shown::Online, _) => {
                        format!("{} is online ({})", p.client_id, p.devices.join(", "))
                    }
                    (Shown::Offline, Some(at)) => {
                        format!("{} is offline (last seen {})", p.client_id, utc(at))
                    }
                    (Shown::Offline, None) => format!("{} is offline", p.client_id),
                };
                out.say(&line).await;
            }
            ServerFrame::Signal(s) if s.body.get("typing") == Some(&serde_json::json!(true)) => {
                match s.group {
                    Some(group) => out.say(&format!("#{group} {} is typing…", s.from)).await,
                    None => out.say(&format!("{} is typing…", s.from)).await,
                }
            }
            ServerFrame::Ack(ack) => {
                let id = ack.id.unwrap_or_default();
                let to = self.unacked.remove(&id).unwrap_or_default();
                if ack.status == AckStatus::Fanout {
                    let n = |count: Option<u32>| count.unwrap_or(0);
                    let nodes = n(ack.nodes);
                    let hops = if nodes == 1 { "hop" } else { "hops" };
                    out.say(&format!(
                        "[{id}] -> {to}: fanout ({} local, {} remote, {} offline; {nodes} {hops})",
                        n(ack.local),
                        n(ack.remote),
                        n(ack.offline)
                    ))
                    .await;
                    return;
                }
                let sessions = ack.sessions.unwrap_or(1);
                let many = if sessions > 1 {
                    format!(" ({sessions} sessions)")
                } else {
                    String::new()
                };
                out.say(&format!("[{id}] -> {to}: {}{many}", ack.status.as_str()))
                    .await;
                if ack.status != AckStatus::Offline {
                    self.awaiting_receipt.insert(ack.msg_id, (id, to, sessions));
                }
            }
            ServerFrame::Receipt {
                msg_id,
                status,
                to: member,
                device,
                reason,
                ..
            } => {
                if !self.awaiting_receipt.contains_key(&msg_id) {
                    // A group send's member that could not be reached.
                    let member = member.unwrap_or_default();
                    let device = device.unwrap_or_default();
                    let reason = reason.map(|r| format!(" ({})", r.as_str()));
                    let status = match status {
                        ReceiptStatus::Delivered => "delivered",
                        ReceiptStatus::Offline => "offline",
                    };
                    out.say(&format!(
                        "[group] -> {member}/{device}: {status}{}",
                        reason.unwrap_or_default()
                    ))
                    .await;
                    return;
                }
                if let Some((id, to, left)) = self.awaiting_receipt.get_mut(&msg_id) {
                    let status = match (status, reason) {
                        (ReceiptStatus::Delivered, _) => "delivered".to_owned(),
                        (ReceiptStatus::Offline, Some(reason)) => {
                            format!("offline ({})", reason.as_str())
                        }
                        (ReceiptStatus::Offline, None) => "offline".to_owned(),
                    };
                    // A client on one device names none: `default`.
                    let device = device
                        .filter(|d| d != "default")
                        .map(|d| format!("/{d}"))
                        .unwrap_or_default();
                    out.say(&format!("[{id}] -> {to}{device}: {status}")).await;
                    *left = left.saturating_sub(1);
                    if *left == 0 {
                        self.awaiting_receipt.remove(&msg_id);
                    }
                }
            }
            ServerFrame::Message(message) => {
                let body = &message.body;
                let text = match body.get("text").and_then(|t| t.as_str()) {
                    Some(text) => text.to_owned(),
                    None => body.to_string(),
                };
                let line = match (&message.to, &message.group) {
                    (Some(to), _) if message.carbon => {
                        format!("you (on another device) -> {to}: {text}")
                    }
                    (_, Some(group)) => format!("#{group} {}: {text}", message.from),
                    _ => format!("{}: {text}", message.from),
                };
                out.say(&line).await;
            }
            ServerFrame::Error {
                code, message, id, ..
            } => {
                let at = id
                    .inspect(|id| {
                        self.unacked.remove(id);
                    })
                    .map(|id| format!("[{id}] "))
                    .unwrap_or_default();
                out.say(&format!("{at}error {}: {message}", code.as_str()))
                    .await;
            }
            _ => {}
        }
    }
}

/// A message's text: its `text` field, or its JSON.
fn text_of(body: &serde_json::Value) -> String {
    match body.get("text").and_then(|t| t.as_str()) {
        Some(text) => text.to_owned(),
        None => body.to_string(),
    }
}

/// A kept message as `/history` prints it.
fn history_line(m: &MessageFrame) -> String {
    let cseq = m.cseq.map(|c| format!("#{c} ")).unwrap_or_default();
    let to = match (&m.to, &m.group) {
        (_, Some(group)) => format!(" #{group}"),
        (Some(to), None) => format!(" -> {to}"),
        _ => String::new(),
    };
    format!("{cseq}{}{to}: {}", m.from, text_of(&m.body))
}

/// `ms` since the epoch as `YYYY-MM-DD HH:MM:SS UTC` (civil from days,
/// H. Hinnant's algorithm: no date crate for one line of output).
fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Lines for the user: what happened on stdout, hints on stderr; each
/// flushed at once, so a reader at the other end of a pipe sees it.
struct Output {
    stdout: tokio::io::Stdout,
}

impl Output {
    fn new() -> Self {
        Self {
            stdout: tokio::io::stdout(),
        }
    }

    async fn say(&mut self, line: &str) {
        let _ = self.stdout.write_all(format!("{line}\n").as_bytes()).await;
        let _ = self.stdout.flush().await;
    }

    async fn note(&mut self, line: &str) {
        eprintln!("{line}");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_are_shown_in_utc() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(super::utc(1_764_220_000_000), "2025-11-27 05:06:40 UTC");
        // A leap day, at its last second.
        assert_eq!(super::utc(951_868_799_000), "2000-02-29 23:59:59 UTC");
    }
}
