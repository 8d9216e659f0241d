//! keyport patch: consumption-gated receive windows (see vendor/russh/README.md).
//!
//! Upstream re-opens a channel's receive window as soon as a packet arrives and then awaits
//! room in the channel's bounded mailbox, so a slow consumer blocks the whole session loop
//! (every channel, keepalives, rekeying) while the window keeps growing. Here the session
//! debits the window on receipt, never awaits a channel's mailbox for data, and grants the
//! window back only as the application consumes what it received:
//!
//! - [`Mailbox`] is the receiving end of a channel. Taking a `Data`/`ExtendedData` message
//!   out of it counts as consumption, unless the application asked for a [`WindowCredit`]
//!   and reports consumption itself (e.g. once the bytes reached a program's stdin).
//! - [`Credit`] is shared by the mailbox and the session: it counts consumed bytes and wakes
//!   the session (once, however many bytes) when enough were consumed for a window adjust
//!   (OpenSSH's rule: a few packets' worth, or half the window) or when the session holds
//!   messages the mailbox had no room for.
//! - [`Backlog`] holds, in the session, what the bounded mailbox could not take, in order;
//!   small data messages are merged, so its memory is bounded by the window (plus a capped
//!   number of control messages), not by how the peer cut its packets.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::mpsc::{Receiver, Sender, UnboundedSender};

use crate::{ChannelId, ChannelMsg};

/// Data messages in the backlog are merged up to this size.
const MERGE_LIMIT: usize = 256 * 1024;
/// Control messages (requests, EOF, …) the backlog holds before the session falls back to
/// waiting for the mailbox, as upstream does. Only a consumer that stops reading its channel
/// altogether while the peer keeps sending requests gets there.
const MAX_HELD_CONTROL: usize = 1024;

/// Consumption shared by a channel's mailbox and its session.
#[derive(Debug, Default)]
pub(crate) struct Credit {
    /// Bytes consumed and not yet granted back to the peer.
    consumed: AtomicUsize,
    /// The application reports consumption itself ([`WindowCredit`]).
    manual: AtomicBool,
    /// The session has been woken and not yet looked.
    wake_pending: AtomicBool,
    /// The session holds messages for this channel that the mailbox had no room for.
    held: AtomicBool,
    /// The mailbox is gone: nothing more will be consumed.
    closed: AtomicBool,
    /// Bytes the peer sent beyond the window since the last packet that fitted.
    excess: AtomicUsize,
    /// Set by the session at the channel's first data: how to wake it, and after how many
    /// consumed bytes.
    waker: OnceLock<Waker>,
}

#[derive(Debug)]
struct Waker {
    id: ChannelId,
    tx: UnboundedSender<ChannelId>,
    threshold: usize,
}

impl Credit {
    fn register(&self, id: ChannelId, tx: &UnboundedSender<ChannelId>, threshold: usize) {
        let _ = self.waker.get_or_init(|| Waker {
            id,
            tx: tx.clone(),
            threshold: threshold.max(1),
        });
    }

    fn release(&self, n: usize) {
        if n == 0 {
            return;
        }
        let total = self.consumed.fetch_add(n, Ordering::AcqRel) + n;
        if self.waker.get().is_some_and(|w| total >= w.threshold) {
            self.wake();
        }
    }

    fn wake(&self) {
        if let Some(waker) = self.waker.get()
            && !self.wake_pending.swap(true, Ordering::AcqRel)
        {
            let _ = waker.tx.send(waker.id);
        }
    }

    fn taken(&self, msg: &ChannelMsg) {
        if !self.manual.load(Ordering::Acquire) {
            self.release(data_len(msg));
        }
        if self.held.load(Ordering::Acquire) {
            self.wake();
        }
    }
}

fn data_len(msg: &ChannelMsg) -> usize {
    match msg {
        ChannelMsg::Data { data } | ChannelMsg::ExtendedData { data, .. } => data.len(),
        _ => 0,
    }
}

/// The receiving end of a channel: a bounded mailbox whose data counts as consumed when taken
/// (or when the application says so, see [`WindowCredit`]).
#[derive(Debug)]
pub struct Mailbox {
    rx: Receiver<ChannelMsg>,
    credit: Arc<Credit>,
}

/// Reports consumption of a channel's received data, so the peer may send more: obtained with
/// `Channel::window_credit` / `ChannelReadHalf::window_credit` (keyport patch).
#[derive(Clone, Debug)]
pub struct WindowCredit(Arc<Credit>);

impl WindowCredit {
    /// `n` bytes of data taken from the channel have been consumed.
    pub fn consumed(&self, n: usize) {
        self.0.release(n);
    }
}

/// A channel mailbox and the session's end of it.
pub(crate) fn mailbox(capacity: usize) -> (MailboxSender, Mailbox) {
    let (tx, rx) = tokio::sync::mpsc::channel(capacity.max(1));
    let credit = Arc::new(Credit::default());
    (
        MailboxSender {
            tx,
            credit: credit.clone(),
        },
        Mailbox { rx, credit },
    )
}

/// The session's end of a [`Mailbox`].
#[derive(Debug)]
pub struct MailboxSender {
    pub(crate) tx: Sender<ChannelMsg>,
    pub(crate) credit: Arc<Credit>,
}

impl Mailbox {
    /// The next message; `None` once the session dropped the channel.
    pub async fn recv(&mut self) -> Option<ChannelMsg> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<ChannelMsg>> {
        let msg = std::task::ready!(self.rx.poll_recv(cx));
        if let Some(msg) = &msg {
            self.credit.taken(msg);
        }
        Poll::Ready(msg)
    }

    pub(crate) fn close(&mut self) {
        self.rx.close();
    }

    pub(crate) fn window_credit(&self) -> WindowCredit {
        self.credit.manual.store(true, Ordering::Release);
        WindowCredit(self.credit.clone())
    }
}

impl Drop for Mailbox {
    /// Nobody will consume what is queued: grant it back so the peer is not left stuck, and
    /// tell the session to do the same for anything that arrives from now on.
    fn drop(&mut self) {
        self.rx.close();
        self.credit.closed.store(true, Ordering::Release);
        let mut queued = 0;
        while let Ok(msg) = self.rx.try_recv() {
            queued += data_len(&msg);
        }
        self.credit.release(queued);
        self.credit.wake();
    }
}

/// What the session does with a message for a channel.
pub(crate) enum Delivery {
    /// In the mailbox, or held in order behind what is already waiting.
    Queued,
    /// Nobody reads this channel any more (the message is dropped).
    Closed(ChannelMsg),
    /// Too many control messages are held: the caller must wait for the mailbox.
    Full(ChannelMsg),
}

/// Messages for one channel the mailbox had no room for yet, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Backlog {
    held: VecDeque<Held>,
    control: usize,
}

#[derive(Debug)]
enum Held {
    Msg(ChannelMsg),
    Data { ext: Option<u32>, buf: BytesMut },
}

impl Held {
    fn into_msg(self) -> ChannelMsg {
        match self {
            Held::Msg(msg) => msg,
            Held::Data { ext: None, buf } => ChannelMsg::Data { data: buf.freeze() },
            Held::Data { ext: Some(ext), buf } => ChannelMsg::ExtendedData {
                data: buf.freeze(),
                ext,
            },
        }
    }
}

fn split_data(msg: &ChannelMsg) -> Option<(Option<u32>, &Bytes)> {
    match msg {
        ChannelMsg::Data { data } => Some((None, data)),
        ChannelMsg::ExtendedData { data, ext } => Some((Some(*ext), data)),
        _ => None,
    }
}

impl Backlog {
    fn push(&mut self, msg: ChannelMsg) {
        if let Some((ext, data)) = split_data(&msg) {
            if let Some(Held::Data { ext: e, buf }) = self.held.back_mut()
                && *e == ext
                && buf.len() + data.len() <= MERGE_LIMIT
            {
                buf.extend_from_slice(data);
                return;
            }
            let merge = matches!(self.held.back(), Some(Held::Msg(last))
                if split_data(last).is_some_and(|(e, prev)| {
                    e == ext && prev.len() + data.len() <= MERGE_LIMIT
                }));
            if merge && let Some(Held::Msg(last)) = self.held.pop_back() {
                let mut buf = BytesMut::with_capacity(MERGE_LIMIT);
                if let Some((_, prev)) = split_data(&last) {
                    buf.extend_from_slice(prev);
                }
                buf.extend_from_slice(data);
                self.held.push_back(Held::Data { ext, buf });
                return;
            }
        } else {
            self.control += 1;
        }
        self.held.push_back(Held::Msg(msg));
    }

    fn pop(&mut self) -> Option<ChannelMsg> {
        let held = self.held.pop_front()?;
        if let Held::Msg(msg) = &held
            && split_data(msg).is_none()
        {
            self.control -= 1;
        }
        Some(held.into_msg())
    }

    fn unpop(&mut self, msg: ChannelMsg) {
        if split_data(&msg).is_none() {
            self.control += 1;
        }
        self.held.push_front(Held::Msg(msg));
    }

    fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    fn data_len(&self) -> usize {
        self.held
            .iter()
            .map(|h| match h {
                Held::Msg(msg) => data_len(msg),
                Held::Data { buf, .. } => buf.len(),
            })
            .sum()
    }
}

/// The session's per-channel flow state, kept in its `ChannelRef`.
#[derive(Debug)]
pub(crate) struct Flow {
    pub(crate) credit: Arc<Credit>,
    backlog: Mutex<Backlog>,
}

impl Flow {
    pub(crate) fn new(credit: Arc<Credit>) -> Self {
        Self {
            credit,
            backlog: Mutex::new(Backlog::default()),
        }
    }

    fn backlog(&self) -> std::sync::MutexGuard<'_, Backlog> {
        self.backlog
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Puts `msg` in the mailbox, or behind what is held; never waits.
    pub(crate) fn deliver(&self, tx: &Sender<ChannelMsg>, msg: ChannelMsg) -> Delivery {
        let mut backlog = self.backlog();
        if backlog.is_empty() {
            match tx.try_send(msg) {
                Ok(()) => return Delivery::Queued,
                Err(TrySendError::Closed(msg)) => return Delivery::Closed(msg),
                Err(TrySendError::Full(msg)) => {
                    backlog.push(msg);
                    self.credit.held.store(true, Ordering::Release);
                    // The consumer may have taken everything between our try and the flag.
                    drop(backlog);
                    self.credit.wake();
                    return Delivery::Queued;
                }
            }
        }
        if split_data(&msg).is_none() && backlog.control >= MAX_HELD_CONTROL {
            return Delivery::Full(msg);
        }
        backlog.push(msg);
        Delivery::Queued
    }

    /// Moves held messages into the mailbox while it has room. Returns the data bytes that
    /// will never be consumed because the mailbox is gone.
    pub(crate) fn drain(&self, tx: &Sender<ChannelMsg>) -> usize {
        let mut backlog = self.backlog();
        while let Some(msg) = backlog.pop() {
            match tx.try_send(msg) {
                Ok(()) => {}
                Err(TrySendError::Full(msg)) => {
                    backlog.unpop(msg);
                    return 0;
                }
                Err(TrySendError::Closed(msg)) => {
                    let lost = data_len(&msg) + backlog.data_len();
                    *backlog = Backlog::default();
                    self.credit.held.store(false, Ordering::Release);
                    return lost;
                }
            }
        }
        self.credit.held.store(false, Ordering::Release);
        0
    }

    /// Whether messages are held (a control message must then wait behind them).
    pub(crate) fn has_held(&self) -> bool {
        !self.backlog().is_empty()
    }

    /// Registers the session's waker (idempotent).
    pub(crate) fn register(&self, id: ChannelId, tx: &UnboundedSender<ChannelId>, threshold: usize) {
        self.credit.register(id, tx, threshold);
    }

    /// The consumed bytes to grant back now (clears the wake flag first, so a consumption
    /// after this wakes the session again).
    pub(crate) fn take_consumed(&self) -> usize {
        self.credit.wake_pending.store(false, Ordering::Release);
        self.credit.consumed.swap(0, Ordering::AcqRel)
    }

    /// Counts `over` bytes received beyond the window; as OpenSSH, a peer that exceeds it by
    /// more than a tenth of the window is disconnected.
    pub(crate) fn note_excess(&self, over: usize, window: u32) -> Result<(), crate::Error> {
        if over == 0 {
            self.credit.excess.store(0, Ordering::Release);
            return Ok(());
        }
        let total = self.credit.excess.fetch_add(over, Ordering::AcqRel) + over;
        if total > window as usize / 10 {
            return Err(crate::Error::WindowExceeded);
        }
        Ok(())
    }

    /// Whether the application dropped its end of the channel.
    pub(crate) fn is_closed(&self) -> bool {
        self.credit.closed.load(Ordering::Acquire)
    }
}

/// A window adjust is worth sending for `consumed` bytes when, as in OpenSSH's
/// `channel_check_window`, they amount to several packets or half the window.
pub(crate) fn adjust_threshold(window: u32, max_packet: u32) -> usize {
    let window = window as usize;
    (window / 2).min(max_packet as usize * 3).max(1)
}

// Tests: keyport's tests/russh_patch.rs (both sides over loopback) and tests/flow_control.rs
// (the real OpenSSH client); the crate's own dev-dependencies are not carried here.
