//! The differences of keyport's russh patch (vendor/russh/README.md) from upstream, on a russh
//! server and a russh client talking over loopback in one process, for both sides:
//!
//! - the receive window is debited on receipt and granted back only as the channel's reader
//!   takes the data (or, with `window_credit`, reports it consumed): a peer writing to a
//!   channel nobody reads stops after one window, and nothing it sent is lost;
//! - a channel nobody reads never blocks the connection: its other channels go on (upstream
//!   awaits room in the unread channel's mailbox inside the session loop, which freezes them).
//!
//! The client side is also run against the real OpenSSH sshd, as relay mode will use it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use russh::keys::{Algorithm, PrivateKey, PrivateKeyWithHashAlg};
use russh::server::{self, Auth, ChannelOpenHandle, Msg, Session, VerifiedPublicKey};
use russh::{Channel, ChannelMsg, client};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::timeout;

/// Both sides' receive window, small so that tests move little data.
const WINDOW: u32 = 256 * 1024;
/// Mailboxes of a few messages: upstream's session loop would block on the first full one.
const MAILBOX: usize = 4;
const TOTAL: usize = 4 * WINDOW as usize;

fn key() -> PrivateKey {
    PrivateKey::random(&mut russh::keys::key::safe_rng(), Algorithm::Ed25519).unwrap()
}

/// Hands every channel a client opens to the test, unread.
struct ServerSide(mpsc::UnboundedSender<Channel<Msg>>);

impl server::Handler for ServerSide {
    type Error = russh::Error;

    async fn auth_publickey(
        &mut self,
        _: &str,
        _: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(Auth::Accept)
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _: &mut Session,
    ) -> Result<(), Self::Error> {
        reply.accept().await;
        let _ = self.0.send(channel);
        Ok(())
    }
}

struct ClientSide;

impl client::Handler for ClientSide {
    type Error = russh::Error;
    async fn check_server_key(
        &mut self,
        _: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

/// A connected pair: the client's handle and the server's channels as they open.
async fn pair() -> (
    client::Handle<ClientSide>,
    mpsc::UnboundedReceiver<Channel<Msg>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let config = Arc::new(server::Config {
        keys: vec![key()],
        window_size: WINDOW,
        channel_buffer_size: MAILBOX,
        ..Default::default()
    });
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let running = server::run_stream(config, stream, ServerSide(tx))
            .await
            .unwrap();
        let _ = running.await;
    });
    let config = Arc::new(client::Config {
        window_size: WINDOW,
        channel_buffer_size: MAILBOX,
        ..Default::default()
    });
    let stream = TcpStream::connect(addr).await.unwrap();
    let mut handle = client::connect_stream(config, stream, ClientSide)
        .await
        .unwrap();
    let auth = handle
        .authenticate_publickey("u", PrivateKeyWithHashAlg::new(Arc::new(key()), None))
        .await
        .unwrap();
    assert!(auth.success());
    (handle, rx)
}

fn payload() -> Vec<u8> {
    (0..TOTAL).map(|i| (i * 31 % 251) as u8).collect()
}

/// Sends `data` on a write half in 1 KiB pieces (many messages, so unread mailboxes fill),
/// counting what the window let through.
fn send_counted<S>(write: russh::ChannelWriteHalf<S>, data: Vec<u8>) -> Arc<AtomicUsize>
where
    S: From<(russh::ChannelId, ChannelMsg)> + Send + Sync + 'static,
{
    let sent = Arc::new(AtomicUsize::new(0));
    let counter = sent.clone();
    tokio::spawn(async move {
        for piece in data.chunks(1024) {
            if write
                .data_bytes(Bytes::copy_from_slice(piece))
                .await
                .is_err()
            {
                return;
            }
            counter.fetch_add(piece.len(), Ordering::Relaxed);
        }
        let _ = write.eof().await;
    });
    sent
}

/// Reads a channel's data until EOF.
async fn read_all(read: &mut russh::ChannelReadHalf) -> Vec<u8> {
    let mut got = Vec::new();
    while let Some(msg) = timeout(Duration::from_secs(20), read.wait()).await.unwrap() {
        match msg {
            ChannelMsg::Data { data } => got.extend_from_slice(&data),
            ChannelMsg::Eof => break,
            _ => {}
        }
    }
    got
}

/// Until `sent` has not grown for 0.6 s: what a window let through.
async fn settled(sent: &AtomicUsize) -> usize {
    let (mut last, mut still) = (usize::MAX, 0);
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = sent.load(Ordering::Relaxed);
        still = if now == last { still + 1 } else { 0 };
        if still == 2 {
            return now;
        }
        last = now;
    }
}

/// A round trip on a fresh channel: the client says ping, the server answers pong.
async fn round_trip(
    handle: &client::Handle<ClientSide>,
    opened: &mut mpsc::UnboundedReceiver<Channel<Msg>>,
) {
    let work = async {
        let client = handle.channel_open_session().await.unwrap();
        let server = opened.recv().await.unwrap();
        client
            .data_bytes(Bytes::from_static(b"ping"))
            .await
            .unwrap();
        let (mut server_read, server_write) = server.split();
        match server_read.wait().await {
            Some(ChannelMsg::Data { data }) => assert_eq!(&data[..], b"ping"),
            other => panic!("server got {other:?}"),
        }
        server_write
            .data_bytes(Bytes::from_static(b"pong"))
            .await
            .unwrap();
        let (mut client_read, _client_write) = client.split();
        match client_read.wait().await {
            Some(ChannelMsg::Data { data }) => assert_eq!(&data[..], b"pong"),
            other => panic!("client got {other:?}"),
        }
    };
    timeout(Duration::from_secs(10), work)
        .await
        .expect("a channel nobody reads stalled the connection's other channels");
}

/// Which side writes into the channel the other side leaves unread.
#[derive(Clone, Copy)]
enum Writer {
    Client,
    Server,
}

/// The writer gets one window through, no more, while nobody reads; the connection's other
/// channels go on meanwhile; once the reader reads, every byte arrives in order.
async fn an_unread_channel_takes_one_window(writer: Writer) {
    let (handle, mut opened) = pair().await;
    let client = handle.channel_open_session().await.unwrap();
    let server = opened.recv().await.unwrap();
    let data = payload();
    let ((client_read, client_write), (server_read, server_write)) =
        (client.split(), server.split());
    let (sent, mut reader, _other_halves) = match writer {
        Writer::Client => (
            send_counted(client_write, data.clone()),
            server_read,
            (client_read, None, Some(server_write)),
        ),
        Writer::Server => (
            send_counted(server_write, data.clone()),
            client_read,
            (server_read, Some(client_write), None),
        ),
    };
    let through = settled(&sent).await;
    assert!(
        through <= WINDOW as usize,
        "{through} bytes into an unread channel"
    );
    assert!(through >= WINDOW as usize / 2, "only {through} bytes");
    round_trip(&handle, &mut opened).await;
    assert!(read_all(&mut reader).await == data);
}

#[tokio::test]
async fn server_grants_the_window_as_its_reader_takes_data() {
    an_unread_channel_takes_one_window(Writer::Client).await;
}

#[tokio::test]
async fn client_grants_the_window_as_its_reader_takes_data() {
    an_unread_channel_takes_one_window(Writer::Server).await;
}

#[tokio::test]
async fn with_a_window_credit_taking_data_is_not_consuming_it() {
    let (handle, mut opened) = pair().await;
    let client = handle.channel_open_session().await.unwrap();
    let server = opened.recv().await.unwrap();
    let (mut server_read, _w) = server.split();
    let credit = server_read.window_credit();
    let data = payload();
    let (_r, client_write) = client.split();
    let sent = send_counted(client_write, data.clone());

    // The server takes everything it is sent but reports nothing consumed.
    let mut got = Vec::new();
    let taker = async {
        while let Some(ChannelMsg::Data { data }) = server_read.wait().await {
            got.extend_from_slice(&data);
        }
    };
    let _ = timeout(Duration::from_secs(2), taker).await;
    assert!(got.len() <= WINDOW as usize, "{} bytes", got.len());
    assert_eq!(settled(&sent).await, got.len());

    // Consumption reported: the rest follows.
    credit.consumed(got.len());
    while got.len() < TOTAL {
        match timeout(Duration::from_secs(10), server_read.wait())
            .await
            .unwrap()
        {
            Some(ChannelMsg::Data { data }) => {
                credit.consumed(data.len());
                got.extend_from_slice(&data);
            }
            other => panic!("got {other:?} after {} bytes", got.len()),
        }
    }
    assert!(got == data);
}

/// The client side against the real OpenSSH sshd, as relay mode's upstream leg will be: output
/// the client does not read stops at its window, another channel of the connection works
/// meanwhile, and every byte arrives once it reads.
#[tokio::test]
async fn a_russh_client_reading_late_from_a_real_sshd_gets_every_byte() {
    if !keyport::testing::needs_root("an sshd that lets the test's user in") {
        return;
    }
    let sb = common::Sandbox::new();
    let sshd = common::sshd::Sshd::start(&sb, &common::me().name);
    let key = sb.client_key("id_ed25519");
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    sshd.authorize(&[public.trim()]);
    let file = sb.dir.path().join("big.bin");
    let data = payload();
    std::fs::write(&file, &data).unwrap();

    let config = Arc::new(client::Config {
        window_size: WINDOW,
        channel_buffer_size: MAILBOX,
        ..Default::default()
    });
    let mut handle = client::connect(config, ("127.0.0.1", sshd.port), ClientSide)
        .await
        .unwrap();
    let private = russh::keys::load_secret_key(&key, None).unwrap();
    let auth = handle
        .authenticate_publickey(
            common::me().name,
            PrivateKeyWithHashAlg::new(Arc::new(private), None),
        )
        .await
        .unwrap();
    assert!(auth.success(), "sshd log:\n{}", sshd.log());

    // sshd writes the file; nobody reads it for now.
    let unread = handle.channel_open_session().await.unwrap();
    unread
        .exec(true, format!("cat {}", file.display()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let other = async {
        let mut ch = handle.channel_open_session().await.unwrap();
        ch.exec(true, "echo ok").await.unwrap();
        let mut out = Vec::new();
        while let Some(msg) = ch.wait().await {
            match msg {
                ChannelMsg::Data { data } => out.extend_from_slice(&data),
                ChannelMsg::Close => break,
                _ => {}
            }
        }
        out
    };
    let out = timeout(Duration::from_secs(10), other)
        .await
        .expect("an unread channel stalled the connection");
    assert_eq!(out, b"ok\n");

    let (mut read, _w) = unread.split();
    let mut got = Vec::new();
    while let Some(msg) = timeout(Duration::from_secs(20), read.wait()).await.unwrap() {
        match msg {
            ChannelMsg::Data { data } => got.extend_from_slice(&data),
            ChannelMsg::Eof | ChannelMsg::Close => break,
            _ => {}
        }
    }
    assert_eq!(got.len(), data.len());
    assert!(got == data);
}

/// What the peer sent before closing — data, EOF, exit status, the close — reaches a reader
/// that reads only afterwards, even when most of it had to be held outside the mailbox.
#[tokio::test]
async fn held_messages_survive_the_peer_closing_the_channel() {
    let (handle, mut opened) = pair().await;
    let client = handle.channel_open_session().await.unwrap();
    let server = opened.recv().await.unwrap();
    // Within one window, in 1 KiB pieces: far more messages than the client's mailbox holds.
    let data: Vec<u8> = payload()[..WINDOW as usize / 2].to_vec();
    for piece in data.chunks(1024) {
        server
            .data_bytes(Bytes::copy_from_slice(piece))
            .await
            .unwrap();
    }
    server.exit_status(3).await.unwrap();
    server.eof().await.unwrap();
    server.close().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let (mut read, _w) = client.split();
    let (mut got, mut status, mut eof, mut closed) = (Vec::new(), None, false, false);
    while let Some(msg) = timeout(Duration::from_secs(10), read.wait()).await.unwrap() {
        match msg {
            ChannelMsg::Data { data } => got.extend_from_slice(&data),
            ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
            ChannelMsg::Eof => eof = true,
            ChannelMsg::Close => closed = true,
            _ => {}
        }
    }
    assert_eq!(got.len(), data.len());
    assert!(got == data);
    assert_eq!((status, eof, closed), (Some(3), true, true));
}

/// A peer that keeps sending requests into a channel nobody reads is disconnected once that
/// channel's backlog passes its cap, rather than growing the other side's memory.
#[tokio::test]
async fn a_peer_flooding_an_unread_channel_is_cut_off() {
    let (handle, mut opened) = pair().await;
    let client = handle.channel_open_session().await.unwrap();
    let _unread = opened.recv().await.unwrap();
    let flood = async {
        for i in 0..200_000u32 {
            if client.window_change(80 + i % 7, 24, 0, 0).await.is_err() {
                return i;
            }
        }
        panic!("200000 requests into an unread channel and still connected");
    };
    let sent = timeout(Duration::from_secs(30), flood)
        .await
        .expect("the flood neither ended nor was cut off");
    // The cap is 1 MiB at this window: about 8,000 requests of 128 bytes each.
    assert!(sent < 50_000, "cut off only after {sent} requests");
    timeout(Duration::from_secs(10), async {
        while !handle.is_closed() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the connection stayed up");
}
