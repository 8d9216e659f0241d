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
//!   small data messages are merged. What it holds is costed (bytes plus a per-message
//!   overhead); a peer that makes one channel's backlog cost more than four windows — which
//!   only a peer flooding an unread channel with tiny or control messages can — is
//!   disconnected, so memory stays bounded however the peer cuts its packets.
//! - Bytes a peer sends beyond the window are a debt: they are not granted back when
//!   consumed, and a debt above a tenth of the window disconnects the peer (as OpenSSH's
//!   "peer ignored channel window").

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
/// What holding one message costs beyond its bytes (enum, allocation, queue slot).
const MESSAGE_OVERHEAD: usize = 128;

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
    /// Bytes the peer sent beyond the window and that are not yet paid back (withheld from
    /// later grants).
    debt: AtomicUsize,
    /// Set by the session when the channel is inserted in its table: how to wake it, and
    /// after how many consumed bytes.
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

/// What holding `msg` costs: its variable-size parts plus [`MESSAGE_OVERHEAD`].
fn cost(msg: &ChannelMsg) -> usize {
    MESSAGE_OVERHEAD
        + match msg {
            ChannelMsg::Data { data } | ChannelMsg::ExtendedData { data, .. } => data.len(),
            ChannelMsg::SetEnv {
                variable_name,
                variable_value,
                ..
            } => variable_name.len() + variable_value.len(),
            ChannelMsg::Exec { command, .. } => command.len(),
            ChannelMsg::RequestPty {
                term,
                terminal_modes,
                ..
            } => term.len() + terminal_modes.len() * 8,
            ChannelMsg::RequestSubsystem { name, .. } => name.len(),
            ChannelMsg::RequestX11 {
                x11_authentication_protocol,
                x11_authentication_cookie,
                ..
            } => x11_authentication_protocol.len() + x11_authentication_cookie.len(),
            ChannelMsg::ExitSignal {
                error_message,
                lang_tag,
                ..
            } => error_message.len() + lang_tag.len(),
            ChannelMsg::Signal {
                signal: crate::Sig::Custom(name),
            } => name.len(),
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
    /// Nobody will read what is queued: the session re-opens the window from now on (see
    /// `grant_consumed`), and drops what it still holds for this channel.
    fn drop(&mut self) {
        self.rx.close();
        self.credit.closed.store(true, Ordering::Release);
        while self.rx.try_recv().is_ok() {}
        self.credit.wake();
    }
}

/// What the session does with a message for a channel.
pub(crate) enum Delivery {
    /// In the mailbox, or held in order behind what is already waiting.
    Queued,
    /// Nobody reads this channel any more (the message is dropped).
    Closed,
    /// Held, but the channel's backlog now costs more than its cap: the peer is flooding an
    /// unread channel and must be disconnected.
    Flooded,
}

/// Messages for one channel the mailbox had no room for yet, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Backlog {
    held: VecDeque<Held>,
    /// Sum of [`cost`] over `held`.
    cost: usize,
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
                self.cost += data.len();
                return;
            }
            let merge = matches!(self.held.back(), Some(Held::Msg(last))
                if split_data(last).is_some_and(|(e, prev)| {
                    e == ext && prev.len() + data.len() <= MERGE_LIMIT
                }));
            if merge && let Some(Held::Msg(last)) = self.held.pop_back() {
                // Sized to what it holds; later merges grow it (amortized).
                let prev = split_data(&last).map_or(&[][..], |(_, p)| &p[..]);
                let mut buf = BytesMut::with_capacity(prev.len() + data.len());
                buf.extend_from_slice(prev);
                buf.extend_from_slice(data);
                self.held.push_back(Held::Data { ext, buf });
                self.cost += data.len();
                return;
            }
        }
        self.cost += cost(&msg);
        self.held.push_back(Held::Msg(msg));
    }

    fn pop(&mut self) -> Option<ChannelMsg> {
        let msg = self.held.pop_front()?.into_msg();
        self.cost = self.cost.saturating_sub(cost(&msg));
        Some(msg)
    }

    fn unpop(&mut self, msg: ChannelMsg) {
        self.cost += cost(&msg);
        self.held.push_front(Held::Msg(msg));
    }

    fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

/// The session's per-channel flow state, kept in its `ChannelRef`.
#[derive(Debug)]
pub(crate) struct Flow {
    pub(crate) credit: Arc<Credit>,
    backlog: Mutex<Backlog>,
    /// Most a backlog may cost before the peer is disconnected (set at registration).
    cap: AtomicUsize,
    /// Raised (for the session to disconnect) when the backlog passes its cap.
    alarm: OnceLock<Arc<AtomicBool>>,
}

impl Flow {
    pub(crate) fn new(credit: Arc<Credit>) -> Self {
        Self {
            credit,
            backlog: Mutex::new(Backlog::default()),
            cap: AtomicUsize::new(usize::MAX),
            alarm: OnceLock::new(),
        }
    }

    fn backlog(&self) -> std::sync::MutexGuard<'_, Backlog> {
        self.backlog
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Puts `msg` in the mailbox, or behind what is held; never waits.
    pub(crate) fn deliver(&self, tx: &Sender<ChannelMsg>, msg: ChannelMsg) -> Delivery {
        if self.credit.closed.load(Ordering::Acquire) {
            return Delivery::Closed;
        }
        // Empty data carries nothing and costs the peer no window: not worth holding.
        if split_data(&msg).is_some_and(|(_, d)| d.is_empty()) {
            return Delivery::Queued;
        }
        let mut backlog = self.backlog();
        if backlog.is_empty() {
            match tx.try_send(msg) {
                Ok(()) => return Delivery::Queued,
                Err(TrySendError::Closed(_)) => return Delivery::Closed,
                Err(TrySendError::Full(msg)) => {
                    backlog.push(msg);
                    self.credit.held.store(true, Ordering::Release);
                    // The reader may have emptied the mailbox before it could see the flag.
                    drop(backlog);
                    self.credit.wake();
                    return Delivery::Queued;
                }
            }
        }
        backlog.push(msg);
        if backlog.cost > self.cap.load(Ordering::Relaxed) {
            if let Some(alarm) = self.alarm.get() {
                alarm.store(true, Ordering::Release);
            }
            return Delivery::Flooded;
        }
        Delivery::Queued
    }

    /// Moves held messages into the mailbox while it has room.
    pub(crate) fn drain(&self, tx: &Sender<ChannelMsg>) {
        let mut backlog = self.backlog();
        while let Some(msg) = backlog.pop() {
            match tx.try_send(msg) {
                Ok(()) => {}
                Err(TrySendError::Full(msg)) => {
                    backlog.unpop(msg);
                    return;
                }
                Err(TrySendError::Closed(_)) => {
                    *backlog = Backlog::default();
                    break;
                }
            }
        }
        self.credit.held.store(false, Ordering::Release);
    }

    /// Whether messages are held (a control message must then wait behind them).
    pub(crate) fn has_held(&self) -> bool {
        !self.backlog().is_empty()
    }

    /// Registers the session's waker and the backlog cap (idempotent).
    pub(crate) fn register(
        &self,
        id: ChannelId,
        tx: &UnboundedSender<ChannelId>,
        threshold: usize,
        cap: usize,
        alarm: &Arc<AtomicBool>,
    ) {
        self.credit.register(id, tx, threshold);
        self.cap.store(cap, Ordering::Relaxed);
        let _ = self.alarm.get_or_init(|| alarm.clone());
    }

    /// Clears the wake flag: call before looking, so a consumption after it wakes the
    /// session again.
    pub(crate) fn woken(&self) {
        self.credit.wake_pending.store(false, Ordering::Release);
    }

    /// The consumed bytes to grant back now, less what pays back the peer's debt.
    pub(crate) fn take_grant(&self) -> usize {
        let consumed = self.credit.consumed.swap(0, Ordering::AcqRel);
        let mut debt = self.credit.debt.load(Ordering::Acquire);
        loop {
            let paid = debt.min(consumed);
            if paid == 0 {
                return consumed;
            }
            match self.credit.debt.compare_exchange(
                debt,
                debt - paid,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return consumed - paid,
                Err(now) => debt = now,
            }
        }
    }

    /// Adds `over` bytes received beyond the window to the peer's debt; as OpenSSH, a peer
    /// more than a tenth of the window in debt is disconnected.
    pub(crate) fn note_excess(&self, over: usize, window: u32) -> Result<(), crate::Error> {
        if over == 0 {
            return Ok(());
        }
        let debt = self.credit.debt.fetch_add(over, Ordering::AcqRel) + over;
        if debt > window as usize / 10 {
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

/// Most one channel's backlog may cost: four windows (and at least 1 MiB).
pub(crate) fn backlog_cap(window: u32) -> usize {
    (window as usize).saturating_mul(4).max(1 << 20)
}

// Tests: keyport's tests/russh_patch.rs (both sides over loopback) and tests/flow_control.rs
// (the real OpenSSH client); the crate's own dev-dependencies are not carried here.
