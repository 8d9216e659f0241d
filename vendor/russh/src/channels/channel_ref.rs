use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::mpsc::{Sender, UnboundedReceiver, UnboundedSender, unbounded_channel};

use super::WindowSizeRef;
use super::flow::{Delivery, Flow, MailboxSender, adjust_threshold, backlog_cap};
use crate::{ChannelId, ChannelMsg};

/// A handle to the [`super::Channel`]'s to be able to transmit messages
/// to it and update it's `window_size`.
#[derive(Debug)]
pub struct ChannelRef {
    pub(super) sender: Sender<ChannelMsg>,
    pub(super) window_size: WindowSizeRef,
    /// keyport patch: consumption-gated receive window and the messages the mailbox had no
    /// room for (see `flow.rs`).
    pub(crate) flow: Flow,
}

impl ChannelRef {
    pub fn new(sender: MailboxSender) -> Self {
        Self {
            sender: sender.tx,
            window_size: WindowSizeRef::new(0),
            flow: Flow::new(sender.credit),
        }
    }

    pub(crate) fn window_size(&self) -> &WindowSizeRef {
        &self.window_size
    }

    /// keyport patch: delivers `msg` in order behind any held messages, without waiting for
    /// the mailbox. A channel whose backlog passes its cap raises the session's alarm (the
    /// peer is flooding an unread channel; the session disconnects it).
    pub async fn send(&self, msg: ChannelMsg) -> Result<(), ()> {
        match self.flow.deliver(&self.sender, msg) {
            Delivery::Queued | Delivery::Flooded => Ok(()),
            Delivery::Closed => Err(()),
        }
    }

    /// keyport patch: delivers received data without waiting. `false` when nobody reads the
    /// channel any more (the caller then re-opens the window on receipt, as upstream).
    pub(crate) fn deliver_data(&self, msg: ChannelMsg) -> bool {
        !matches!(self.flow.deliver(&self.sender, msg), Delivery::Closed)
    }

    /// keyport patch: moves held messages into the mailbox while it has room.
    pub(crate) fn drain_held(&self) {
        self.flow.drain(&self.sender)
    }

    /// Informational messages that may be dropped when the mailbox is full.
    pub(crate) fn try_send(&self, msg: ChannelMsg) -> Result<(), ()> {
        if self.flow.has_held() {
            return Err(());
        }
        self.sender.try_send(msg).map_err(|_| ())
    }
}

/// keyport patch: a session's channels, which registers each with the session's flow waker
/// as it is inserted, and keeps a closed channel until what it held reached its reader.
#[derive(Debug)]
pub(crate) struct ChannelRefs {
    map: HashMap<ChannelId, ChannelRef>,
    /// Channels the peer closed while messages for them were still held.
    closing: HashMap<ChannelId, ChannelRef>,
    wake_tx: UnboundedSender<ChannelId>,
    /// Channels whose application consumed data or freed mailbox room.
    pub(crate) wake_rx: UnboundedReceiver<ChannelId>,
    threshold: usize,
    cap: usize,
    /// A channel's backlog passed its cap: the session must disconnect.
    alarm: Arc<AtomicBool>,
}

impl ChannelRefs {
    /// `window` and `max_packet` are what this side advertises for its channels.
    pub(crate) fn new(window: u32, max_packet: u32) -> Self {
        let (wake_tx, wake_rx) = unbounded_channel();
        Self {
            map: HashMap::new(),
            closing: HashMap::new(),
            wake_tx,
            wake_rx,
            threshold: adjust_threshold(window, max_packet),
            cap: backlog_cap(window),
            alarm: Arc::new(AtomicBool::new(false)),
        }
    }

    pub(crate) fn insert(&mut self, id: ChannelId, channel: ChannelRef) -> Option<ChannelRef> {
        channel
            .flow
            .register(id, &self.wake_tx, self.threshold, self.cap, &self.alarm);
        self.map.insert(id, channel)
    }

    /// The peer closed `id`: forget it, unless messages for it are still held (EOF, exit
    /// status, the close itself): then it stays until they are in its mailbox.
    pub(crate) fn retire(&mut self, id: ChannelId) {
        if let Some(channel) = self.map.remove(&id)
            && channel.flow.has_held()
            && !channel.flow.is_closed()
        {
            self.closing.insert(id, channel);
        }
    }

    /// The channel a wake-up is for: open, or closed with messages still held.
    pub(crate) fn woken(&mut self, id: ChannelId) -> Option<&ChannelRef> {
        if let Some(channel) = self.closing.get(&id) {
            channel.flow.woken();
            channel.drain_held();
            if !channel.flow.has_held() || channel.flow.is_closed() {
                self.closing.remove(&id);
            }
            return None;
        }
        self.map.get(&id)
    }

    /// Whether a peer flooded an unread channel past its backlog cap.
    pub(crate) fn flooded(&self) -> bool {
        self.alarm.load(Ordering::Acquire)
    }
}

impl std::ops::Deref for ChannelRefs {
    type Target = HashMap<ChannelId, ChannelRef>;

    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

impl std::ops::DerefMut for ChannelRefs {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.map
    }
}
