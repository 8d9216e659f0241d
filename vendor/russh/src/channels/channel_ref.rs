use std::collections::HashMap;

use tokio::sync::mpsc::error::SendError;
use tokio::sync::mpsc::{Sender, UnboundedReceiver, UnboundedSender, unbounded_channel};

use super::WindowSizeRef;
use super::flow::{Delivery, Flow, MailboxSender, adjust_threshold};
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
    /// the mailbox (unless an unread channel has piled up too many control messages).
    pub async fn send(&self, msg: ChannelMsg) -> Result<(), SendError<ChannelMsg>> {
        match self.flow.deliver(&self.sender, msg) {
            Delivery::Queued => Ok(()),
            Delivery::Closed(msg) => Err(SendError(msg)),
            Delivery::Full(msg) => {
                while self.flow.has_held() {
                    if self.sender.reserve().await.is_err() {
                        return Err(SendError(msg));
                    }
                    self.flow.drain(&self.sender);
                }
                self.sender.send(msg).await
            }
        }
    }

    /// keyport patch: delivers received data without waiting. `false` when nobody reads the
    /// channel any more (the caller then grants the window back on receipt, as upstream).
    pub(crate) fn deliver_data(&self, msg: ChannelMsg) -> bool {
        matches!(self.flow.deliver(&self.sender, msg), Delivery::Queued)
    }

    /// keyport patch: moves held messages into the mailbox while it has room; returns the
    /// data bytes that will never be consumed (the mailbox is gone).
    pub(crate) fn drain_held(&self) -> usize {
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
/// as it is inserted.
#[derive(Debug)]
pub(crate) struct ChannelRefs {
    map: HashMap<ChannelId, ChannelRef>,
    wake_tx: UnboundedSender<ChannelId>,
    /// Channels whose application consumed data or freed mailbox room.
    pub(crate) wake_rx: UnboundedReceiver<ChannelId>,
    threshold: usize,
}

impl ChannelRefs {
    /// `window` and `max_packet` are what this side advertises for its channels.
    pub(crate) fn new(window: u32, max_packet: u32) -> Self {
        let (wake_tx, wake_rx) = unbounded_channel();
        Self {
            map: HashMap::new(),
            wake_tx,
            wake_rx,
            threshold: adjust_threshold(window, max_packet),
        }
    }

    pub(crate) fn insert(&mut self, id: ChannelId, channel: ChannelRef) -> Option<ChannelRef> {
        channel.flow.register(id, &self.wake_tx, self.threshold);
        self.map.insert(id, channel)
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
