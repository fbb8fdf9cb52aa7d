//! Send queues: one per connection, one send in flight at a time.
//!
//! A connection's queue is an intrusive list of chunks that lives in a per-shard [`SendPool`],
//! so an idle connection's queue is three integers and no heap memory. A chunk is either a
//! shared payload (`Bytes`, e.g. one broadcast frame referenced by thousands of queues) or a
//! range of a pooled block that [`SendPool::push_copy`] copied small writes into (consecutive
//! small writes to one connection coalesce into one block).
//!
//! A small shared payload ([`COPY_MAX`] bytes or less) queued behind another unsent small chunk
//! is copied into the queue's block instead of getting a node of its own: a connection that
//! falls behind a fast stream of small frames then holds one node and one contiguous block
//! per few kilobytes, not one node per frame. The nodes of a per-frame list are scattered over
//! the pool, and walking them at prepare and completion missed the cache on every frame (30%
//! of a shard's time at 600,000 deliveries/s, `perf record`); the copy of a frame of a hundred
//! bytes costs less than one of those misses, the kernel reads one iovec instead of dozens,
//! and a lone frame still goes out without any copy.
//!
//! When the loop turns, the first up-to-[`MAX_IOV`] chunks of a queue leave in one send: a
//! queue holding one chunk leaves as a plain `send` ([`Prepared::Single`], no `msghdr` for the
//! kernel to import: `IORING_OP_SEND` is cheaper per operation than `IORING_OP_SENDMSG`), more
//! than one in a gathered `sendmsg` ([`Prepared::Gathered`]). Either way the chunks are
//! *sealed* (the kernel holds pointers into them) until the completion says how many bytes
//! went; fully sent chunks are freed, a partly sent one is advanced, and the rest is unsealed
//! and goes in the next send. Blocks, nodes and the `msghdr`/iovec contexts are pooled, so
//! steady state allocates nothing per message.

use bytes::{Buf, Bytes};

/// Gathered chunks per `sendmsg`.
pub(crate) const MAX_IOV: usize = 64;
/// Bytes per pooled copy block (a page: a connection with a few small frames queued holds
/// one, so a broadcast's transient memory stays small).
pub(crate) const BLOCK_SIZE: usize = 4 * 1024;
/// Free blocks kept for reuse (16 MiB); beyond this, freed blocks go back to the allocator.
const MAX_FREE_BLOCKS: usize = 4096;
/// A shared payload up to this size is copied into the queue's block when it would otherwise
/// be the second (or later) unsent chunk of the queue.
pub(crate) const COPY_MAX: usize = 512;
const NONE: u32 = u32::MAX;
/// `SendQueue::op` of a single-chunk send in flight (it needs no pooled `SendOp`).
const SINGLE: u32 = u32::MAX - 1;

/// A shared payload handed to [`SendPool::push_shared_part`]: owned, or borrowed from a
/// caller that shares one buffer with many connections. At a thousand messages a second to
/// thousands of connections most payloads are copied behind a small unsent tail, so a
/// borrowed one saves a reference-count increment and decrement (two atomic operations on
/// the buffer's header) per connection.
pub enum Payload<'a> {
    Owned(Bytes),
    Borrowed(&'a Bytes),
}

impl Payload<'_> {
    pub(crate) fn len(&self) -> usize {
        self.as_bytes().len()
    }

    fn as_bytes(&self) -> &Bytes {
        match self {
            Payload::Owned(b) => b,
            Payload::Borrowed(b) => b,
        }
    }

    fn into_owned(self) -> Bytes {
        match self {
            Payload::Owned(b) => b,
            Payload::Borrowed(b) => b.clone(),
        }
    }
}

enum Chunk {
    /// A shared payload, advanced in place after a partial send.
    Shared(Bytes),
    /// `block[start..end]` of a pooled copy block.
    Block { id: u32, start: u32, end: u32 },
    /// A node on the free list.
    Vacant,
}

struct Node {
    chunk: Chunk,
    /// Next node of the same queue, or `NONE`.
    next: u32,
    /// Part of the send in flight: the kernel may be reading it.
    sealed: bool,
    /// The chunk's first byte begins a record (a payload the handler queued whole, not the
    /// continuation of one, and not partly sent): [`SendPool::drop_unsent_records`] may cut
    /// the queue here without leaving a torn message on the wire.
    starts_record: bool,
}

/// The per-I/O context of one `sendmsg` (IOCP's OVERLAPPED + WSABUF array): boxed so the
/// kernel's pointers into it stay valid while the pool grows.
pub(crate) struct SendOp {
    pub msg: libc::msghdr,
    iov: [libc::iovec; MAX_IOV],
}

/// A connection's queue: indexes into the shard's [`SendPool`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct SendQueue {
    head: u32,
    tail: u32,
    /// Bytes queued and not yet acknowledged by a send completion.
    pub bytes: u32,
    /// The `SendOp` in flight, `SINGLE` for a single-chunk send in flight, or `NONE`.
    op: u32,
    /// Payloads queued since the previous send was prepared (the send-batch histogram).
    fresh: u32,
}

impl Default for SendQueue {
    fn default() -> Self {
        SendQueue {
            head: NONE,
            tail: NONE,
            bytes: 0,
            op: NONE,
            fresh: 0,
        }
    }
}

impl SendQueue {
    pub fn is_empty(&self) -> bool {
        self.head == NONE
    }

    pub fn in_flight(&self) -> bool {
        self.op != NONE
    }

    /// Payloads queued since the last call (called when a send is prepared).
    pub fn take_fresh(&mut self) -> u32 {
        std::mem::take(&mut self.fresh)
    }
}

/// What [`SendPool::prepare`] sealed for the kernel.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Prepared {
    /// One chunk: `len` bytes at `ptr`, for a plain `send`.
    Single { ptr: *const u8, len: u32 },
    /// `chunks` (2..=[`MAX_IOV`]) chunks behind a pooled `msghdr`, for `sendmsg`.
    Gathered {
        msg: *const libc::msghdr,
        #[cfg_attr(not(test), allow(dead_code))] // read by tests and Debug
        chunks: u32,
    },
}

#[cfg(test)]
impl Prepared {
    /// Queue chunks this send carries.
    pub fn chunks(&self) -> usize {
        match *self {
            Prepared::Single { .. } => 1,
            Prepared::Gathered { chunks, .. } => chunks as usize,
        }
    }
}

/// Per-shard storage behind every connection's [`SendQueue`].
pub(crate) struct SendPool {
    nodes: Vec<Node>,
    free_nodes: Vec<u32>,
    blocks: Vec<Option<Box<[u8]>>>,
    free_blocks: Vec<u32>,
    vacant_blocks: Vec<u32>,
    /// Boxed: the kernel holds pointers into an op until its completion, so ops must not
    /// move when the pool grows.
    #[allow(clippy::vec_box)]
    ops: Vec<Box<SendOp>>,
    free_ops: Vec<u32>,
    /// Bytes queued over all of this pool's queues (sent ones leave at completion).
    queued: u64,
}

impl SendPool {
    pub fn new() -> SendPool {
        SendPool {
            nodes: Vec::new(),
            free_nodes: Vec::new(),
            blocks: Vec::new(),
            free_blocks: Vec::new(),
            vacant_blocks: Vec::new(),
            ops: Vec::new(),
            free_ops: Vec::new(),
            queued: 0,
        }
    }

    /// Bytes queued over all queues of this pool and not yet sent.
    pub fn queued_bytes(&self) -> u64 {
        self.queued
    }

    /// Blocks currently allocated (in use or kept free).
    pub fn blocks_allocated(&self) -> usize {
        self.blocks.len() - self.vacant_blocks.len()
    }

    fn alloc_node(&mut self, chunk: Chunk, starts_record: bool) -> u32 {
        let node = Node {
            chunk,
            next: NONE,
            sealed: false,
            starts_record,
        };
        if let Some(i) = self.free_nodes.pop() {
            self.nodes[i as usize] = node;
            i
        } else {
            self.nodes.push(node);
            (self.nodes.len() - 1) as u32
        }
    }

    fn free_node(&mut self, i: u32) {
        let chunk = std::mem::replace(&mut self.nodes[i as usize].chunk, Chunk::Vacant);
        if let Chunk::Block { id, .. } = chunk {
            self.free_block(id);
        }
        self.free_nodes.push(i);
    }

    fn alloc_block(&mut self) -> u32 {
        if let Some(id) = self.free_blocks.pop() {
            return id;
        }
        let block = vec![0u8; BLOCK_SIZE].into_boxed_slice();
        if let Some(id) = self.vacant_blocks.pop() {
            self.blocks[id as usize] = Some(block);
            id
        } else {
            self.blocks.push(Some(block));
            (self.blocks.len() - 1) as u32
        }
    }

    fn free_block(&mut self, id: u32) {
        if self.free_blocks.len() < MAX_FREE_BLOCKS {
            self.free_blocks.push(id);
        } else {
            self.blocks[id as usize] = None;
            self.vacant_blocks.push(id);
        }
    }

    fn link(&mut self, q: &mut SendQueue, node: u32) {
        if q.tail == NONE {
            q.head = node;
        } else {
            self.nodes[q.tail as usize].next = node;
        }
        q.tail = node;
    }

    /// Queues a shared payload: by reference, or copied behind another small unsent chunk
    /// (module docs).
    /// `messages` is how many application messages the payload holds (the messages-per-send
    /// histogram counts them).
    pub fn push_shared(&mut self, q: &mut SendQueue, payload: Bytes, messages: u32) {
        self.push_shared_part(q, Payload::Owned(payload), messages, true);
    }

    /// [`SendPool::push_shared`] of a payload that begins a record (`starts_record`) or
    /// continues the one queued before it (e.g. a message body behind its header). A
    /// borrowed payload is cloned (one reference-count increment) only if it is queued by
    /// reference, not when it is copied behind a small unsent tail.
    pub fn push_shared_part(
        &mut self,
        q: &mut SendQueue,
        payload: Payload<'_>,
        messages: u32,
        starts_record: bool,
    ) {
        let bytes = payload.as_bytes();
        if bytes.is_empty() {
            return;
        }
        q.fresh = q.fresh.saturating_add(messages);
        if bytes.len() <= COPY_MAX && self.make_tail_copyable(q) {
            self.copy_in(q, bytes, starts_record);
            return;
        }
        q.bytes += bytes.len() as u32;
        self.queued += bytes.len() as u64;
        let node = self.alloc_node(Chunk::Shared(payload.into_owned()), starts_record);
        self.link(q, node);
    }

    /// True when the queue ends in an unsent block, turning an unsent small shared tail into
    /// one (its bytes copied into a fresh block) so that small frames behind it coalesce.
    fn make_tail_copyable(&mut self, q: &SendQueue) -> bool {
        if q.tail == NONE {
            return false;
        }
        let tail = &self.nodes[q.tail as usize];
        if tail.sealed {
            return false;
        }
        let len = match &tail.chunk {
            Chunk::Block { .. } => return true,
            Chunk::Shared(b) if b.len() <= COPY_MAX => b.len(),
            _ => return false,
        };
        let id = self.alloc_block();
        let tail = &mut self.nodes[q.tail as usize];
        let block = self.blocks[id as usize].as_mut().expect("live block");
        if let Chunk::Shared(b) = &tail.chunk {
            block[..len].copy_from_slice(b);
        }
        tail.chunk = Chunk::Block {
            id,
            start: 0,
            end: len as u32,
        };
        true
    }

    /// Queues a copy of `data`, filling the queue's last block first.
    pub fn push_copy(&mut self, q: &mut SendQueue, data: &[u8]) {
        q.fresh = q.fresh.saturating_add(1);
        self.copy_in(q, data, true);
    }

    /// Copies `data` in; the first fresh block begins a record if `data` does and none of it
    /// went into the queue's last block.
    fn copy_in(&mut self, q: &mut SendQueue, mut data: &[u8], mut starts_record: bool) {
        q.bytes += data.len() as u32;
        self.queued += data.len() as u64;
        if q.tail != NONE {
            let tail = &mut self.nodes[q.tail as usize];
            if let (false, Chunk::Block { id, end, .. }) = (tail.sealed, &mut tail.chunk) {
                let room = BLOCK_SIZE - *end as usize;
                let n = room.min(data.len());
                if n > 0 {
                    let block = self.blocks[*id as usize].as_mut().expect("live block");
                    block[*end as usize..*end as usize + n].copy_from_slice(&data[..n]);
                    *end += n as u32;
                    data = &data[n..];
                    starts_record = false;
                }
            }
        }
        while !data.is_empty() {
            let id = self.alloc_block();
            let n = BLOCK_SIZE.min(data.len());
            self.blocks[id as usize].as_mut().expect("live block")[..n].copy_from_slice(&data[..n]);
            data = &data[n..];
            let node = self.alloc_node(
                Chunk::Block {
                    id,
                    start: 0,
                    end: n as u32,
                },
                starts_record,
            );
            starts_record = false;
            self.link(q, node);
        }
    }

    /// Where a queued chunk's bytes are.
    fn chunk_bytes(&self, i: u32) -> (*const u8, usize) {
        match &self.nodes[i as usize].chunk {
            Chunk::Shared(b) => (b.as_ptr(), b.len()),
            Chunk::Block { id, start, end } => {
                let block = self.blocks[*id as usize].as_ref().expect("live block");
                (block[*start as usize..].as_ptr(), (*end - *start) as usize)
            }
            Chunk::Vacant => unreachable!("vacant node linked in a queue"),
        }
    }

    /// [`SendPool::prepare_at_most`] with no byte cap.
    #[cfg(test)]
    pub fn prepare(&mut self, q: &mut SendQueue) -> Option<Prepared> {
        self.prepare_at_most(q, usize::MAX).map(|(p, _)| p)
    }

    /// Seals the queue's first chunks for one send and says where they are, or `None` when a
    /// send is already in flight or nothing is queued. A lone chunk is sent as it is; more go
    /// through a pooled `SendOp`, gathered until they reach `max_bytes` (at least one chunk,
    /// at most [`MAX_IOV`]), with the bytes they hold (kept out of [`Prepared`], which an
    /// epoll socket stores while its send waits). What the result points at stays valid and
    /// unchanged until [`SendPool::complete`] for this queue.
    pub fn prepare_at_most(
        &mut self,
        q: &mut SendQueue,
        max_bytes: usize,
    ) -> Option<(Prepared, usize)> {
        if q.in_flight() || q.is_empty() {
            return None;
        }
        let (ptr, len) = self.chunk_bytes(q.head);
        if self.nodes[q.head as usize].next == NONE || len >= max_bytes {
            self.nodes[q.head as usize].sealed = true;
            q.op = SINGLE;
            // A chunk is at most `SendQueue::bytes` (u32) long; a short send resumes anyway.
            let len = u32::try_from(len).unwrap_or(u32::MAX);
            return Some((Prepared::Single { ptr, len }, len as usize));
        }
        let op_idx = match self.free_ops.pop() {
            Some(i) => i,
            None => {
                // SAFETY: msghdr and iovec are plain C structs for which all-zero bytes
                // (null pointers, zero lengths) are valid values.
                let op: SendOp = unsafe { std::mem::zeroed() };
                self.ops.push(Box::new(op));
                (self.ops.len() - 1) as u32
            }
        };
        let mut n = 0;
        let mut bytes = 0;
        let mut cur = q.head;
        while cur != NONE && n < MAX_IOV && (n == 0 || bytes < max_bytes) {
            let (ptr, len) = self.chunk_bytes(cur);
            bytes += len;
            self.ops[op_idx as usize].iov[n] = libc::iovec {
                iov_base: ptr as *mut libc::c_void,
                iov_len: len,
            };
            let node = &mut self.nodes[cur as usize];
            node.sealed = true;
            n += 1;
            cur = node.next;
        }
        let op = &mut self.ops[op_idx as usize];
        op.msg.msg_iov = op.iov.as_mut_ptr();
        op.msg.msg_iovlen = n as _;
        q.op = op_idx;
        Some((
            Prepared::Gathered {
                msg: &op.msg as *const libc::msghdr,
                chunks: n as u32,
            },
            bytes,
        ))
    }

    /// Applies a send completion of `sent` bytes: frees what went, advances a partly sent
    /// chunk, unseals the rest and releases the `SendOp`.
    pub fn complete(&mut self, q: &mut SendQueue, mut sent: usize) {
        debug_assert!(q.in_flight());
        let gone = sent.min(q.bytes as usize) as u32;
        q.bytes -= gone;
        self.queued -= u64::from(gone);
        while q.head != NONE {
            let head = q.head;
            let node = &mut self.nodes[head as usize];
            if !node.sealed {
                break;
            }
            node.sealed = false;
            let len = match &node.chunk {
                Chunk::Shared(b) => b.len(),
                Chunk::Block { start, end, .. } => (*end - *start) as usize,
                Chunk::Vacant => unreachable!("vacant node linked in a queue"),
            };
            if sent >= len {
                sent -= len;
                q.head = node.next;
                if q.head == NONE {
                    q.tail = NONE;
                }
                self.free_node(head);
            } else {
                node.starts_record &= sent == 0;
                match &mut node.chunk {
                    Chunk::Shared(b) => b.advance(sent),
                    Chunk::Block { start, .. } => *start += sent as u32,
                    Chunk::Vacant => {}
                }
                // Unseal the rest of the batch.
                let mut cur = node.next;
                while cur != NONE && self.nodes[cur as usize].sealed {
                    self.nodes[cur as usize].sealed = false;
                    cur = self.nodes[cur as usize].next;
                }
                break;
            }
        }
        if q.op != SINGLE {
            self.free_ops.push(q.op);
        }
        q.op = NONE;
    }

    /// Drops everything the kernel is not reading; sealed chunks stay until their completion.
    pub fn clear_unsent(&mut self, q: &mut SendQueue) {
        self.truncate(q, |n| !n.sealed);
    }

    /// Drops what the kernel is not reading from the first chunk on that begins a record, so
    /// that what stays (the send in flight, the rest of a partly sent record) ends on a record
    /// boundary and anything queued next follows whole records. Returns the bytes dropped.
    pub fn drop_unsent_records(&mut self, q: &mut SendQueue) -> u64 {
        self.truncate(q, |n| !n.sealed && n.starts_record)
    }

    /// Frees the queue from its first node for which `cut` holds to its end; returns the
    /// bytes freed.
    fn truncate(&mut self, q: &mut SendQueue, cut: impl Fn(&Node) -> bool) -> u64 {
        let mut kept = NONE;
        let mut cur = q.head;
        while cur != NONE && !cut(&self.nodes[cur as usize]) {
            kept = cur;
            cur = self.nodes[cur as usize].next;
        }
        let mut freed = 0;
        while cur != NONE {
            let next = self.nodes[cur as usize].next;
            let len = self.chunk_len(cur) as u32;
            q.bytes -= len;
            self.queued -= u64::from(len);
            freed += u64::from(len);
            self.free_node(cur);
            cur = next;
        }
        if kept == NONE {
            q.head = NONE;
            q.tail = NONE;
        } else {
            self.nodes[kept as usize].next = NONE;
            q.tail = kept;
        }
        freed
    }

    /// Releases a queue whose connection is gone (no send may be in flight).
    pub fn release(&mut self, q: &mut SendQueue) {
        debug_assert!(!q.in_flight());
        self.queued -= u64::from(q.bytes);
        let mut cur = q.head;
        while cur != NONE {
            let next = self.nodes[cur as usize].next;
            self.free_node(cur);
            cur = next;
        }
        *q = SendQueue::default();
    }

    fn chunk_len(&self, i: u32) -> usize {
        match &self.nodes[i as usize].chunk {
            Chunk::Shared(b) => b.len(),
            Chunk::Block { start, end, .. } => (*end - *start) as usize,
            Chunk::Vacant => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads what a prepared send points at, as the kernel would.
    fn gather(prepared: Prepared, sent: usize) -> Vec<u8> {
        let mut out = Vec::new();
        match prepared {
            Prepared::Single { ptr, len } => {
                // SAFETY: (test only) `prepare` returned this sealed chunk; it stays alive and
                // unmodified until `complete`.
                out.extend_from_slice(unsafe { std::slice::from_raw_parts(ptr, len as usize) });
            }
            Prepared::Gathered { msg, .. } => {
                // SAFETY: (test only) `prepare` returned this msghdr and its iovecs point into
                // chunks that stay alive and unmodified until `complete`.
                let msg = unsafe { &*msg };
                #[allow(clippy::unnecessary_cast)] // msg_iovlen's type differs between libcs
                let iovlen = msg.msg_iovlen as usize;
                for i in 0..iovlen {
                    // SAFETY: as above; i < msg_iovlen.
                    let iov = unsafe { &*msg.msg_iov.add(i) };
                    // SAFETY: iov_base/iov_len describe a live chunk.
                    out.extend_from_slice(unsafe {
                        std::slice::from_raw_parts(iov.iov_base as *const u8, iov.iov_len)
                    });
                }
            }
        }
        out.truncate(sent);
        out
    }

    #[test]
    fn a_lone_chunk_is_a_plain_send_and_needs_no_send_op() {
        let mut pool = SendPool::new();
        let mut q = SendQueue::default();
        pool.push_shared(&mut q, Bytes::from_static(b"hello world"), 1);
        let p = pool.prepare(&mut q).unwrap();
        assert!(matches!(p, Prepared::Single { len: 11, .. }), "{p:?}");
        assert!(pool.prepare(&mut q).is_none(), "one send in flight");
        assert_eq!(gather(p, usize::MAX), b"hello world");
        assert!(pool.ops.is_empty(), "no msghdr for a single chunk");
        // Queued behind the sealed chunk: not part of this send.
        pool.push_copy(&mut q, b"!");
        // A short send resumes with the rest of the chunk plus what came meanwhile.
        pool.complete(&mut q, 6);
        let p = pool.prepare(&mut q).unwrap();
        assert!(matches!(p, Prepared::Gathered { chunks: 2, .. }), "{p:?}");
        assert_eq!(gather(p, usize::MAX), b"world!");
        pool.complete(&mut q, 6);
        assert!(q.is_empty());
        assert_eq!(pool.free_ops.len(), pool.ops.len());
        // Copies coalesce into one block: one chunk, one plain send.
        pool.push_copy(&mut q, b"ab");
        pool.push_copy(&mut q, b"cd");
        let p = pool.prepare(&mut q).unwrap();
        assert_eq!(gather(p, usize::MAX), b"abcd");
        assert_eq!(p.chunks(), 1);
        pool.complete(&mut q, 4);
        assert_eq!(pool.free_nodes.len(), pool.nodes.len());
    }

    /// Dropping a backlog keeps what the kernel reads and the rest of a partly sent record;
    /// what is queued afterwards follows whole records.
    #[test]
    fn dropping_unsent_records_cuts_only_at_record_boundaries() {
        let mut pool = SendPool::new();
        let mut q = SendQueue::default();
        let big = Bytes::from(vec![b'a'; 2 * COPY_MAX]);
        pool.push_shared(&mut q, big.clone(), 1);
        // A record of a copied header and a shared body (one message, two chunks).
        pool.push_copy(&mut q, b"H");
        pool.push_shared_part(
            &mut q,
            Payload::Owned(Bytes::from(vec![b'b'; 2 * COPY_MAX])),
            1,
            false,
        );
        // A record that spans two blocks.
        pool.push_copy(&mut q, &vec![b'c'; BLOCK_SIZE + 10]);
        // The first record is in flight, half sent.
        let p = pool.prepare(&mut q).unwrap();
        let first = gather(p, COPY_MAX);
        pool.complete(&mut q, COPY_MAX);
        // The rest of the first record is kept; the two later records go.
        let total = q.bytes;
        let dropped = pool.drop_unsent_records(&mut q);
        assert_eq!(dropped, u64::from(total) - COPY_MAX as u64);
        assert_eq!(pool.queued_bytes(), u64::from(q.bytes));
        pool.push_copy(&mut q, b"CLOSE");
        let mut wire = first;
        while let Some(p) = pool.prepare(&mut q) {
            let all = gather(p, usize::MAX);
            pool.complete(&mut q, all.len());
            wire.extend_from_slice(&all);
        }
        let mut expected = big.to_vec();
        expected.extend_from_slice(b"CLOSE");
        assert_eq!(wire, expected);

        // Mid-record copies: a record that begins inside a block keeps that block, and the
        // record spilling from it keeps its next block too; the next whole record goes.
        pool.push_copy(&mut q, &[b'x'; 100]);
        let p = pool.prepare(&mut q).unwrap();
        let mut wire = gather(p, usize::MAX);
        pool.complete(&mut q, 50);
        wire.truncate(50);
        pool.push_copy(&mut q, &vec![b'y'; BLOCK_SIZE]);
        pool.push_shared(&mut q, big.clone(), 1);
        pool.drop_unsent_records(&mut q);
        pool.push_copy(&mut q, b"!");
        while let Some(p) = pool.prepare(&mut q) {
            let all = gather(p, usize::MAX);
            pool.complete(&mut q, all.len());
            wire.extend_from_slice(&all);
        }
        let mut expected = vec![b'x'; 100];
        expected.extend_from_slice(&vec![b'y'; BLOCK_SIZE]);
        expected.push(b'!');
        assert_eq!(wire, expected);
        assert_eq!(pool.queued_bytes(), 0);
    }

    #[test]
    fn coalesces_small_copies_and_resumes_after_short_writes() {
        let mut pool = SendPool::new();
        let mut q = SendQueue::default();
        let mut expected = Vec::new();
        for i in 0..100u8 {
            let data = vec![i; 300];
            pool.push_copy(&mut q, &data);
            expected.extend_from_slice(&data);
        }
        pool.push_shared(&mut q, Bytes::from_static(b"tail-shared"), 1);
        expected.extend_from_slice(b"tail-shared");
        assert_eq!(q.bytes as usize, expected.len());
        assert_eq!(pool.queued_bytes(), expected.len() as u64);

        let mut got = Vec::new();
        let mut step = 1;
        while !q.is_empty() {
            let p = pool.prepare(&mut q).expect("something to send");
            assert!(pool.prepare(&mut q).is_none(), "one send in flight");
            let all = gather(p, usize::MAX);
            let n = (step * 997).min(all.len());
            step += 1;
            got.extend_from_slice(&all[..n]);
            pool.complete(&mut q, n);
            // New data may arrive between sends.
        }
        assert_eq!(got, expected);
        assert_eq!(q.bytes, 0);
        assert_eq!(pool.queued_bytes(), 0);
        assert_eq!(pool.free_nodes.len(), pool.nodes.len());
    }

    #[test]
    fn clear_unsent_keeps_sealed_prefix() {
        let mut pool = SendPool::new();
        let mut q = SendQueue::default();
        pool.push_shared(&mut q, Bytes::from_static(b"aaaa"), 1);
        let n = pool.prepare(&mut q).unwrap().chunks();
        assert_eq!(n, 1);
        pool.push_shared(&mut q, Bytes::from_static(b"bbbb"), 1);
        pool.push_copy(&mut q, b"cccc");
        pool.clear_unsent(&mut q);
        assert_eq!(q.bytes, 4);
        assert_eq!(
            pool.queued_bytes(),
            4,
            "the pool's total follows every queue"
        );
        pool.complete(&mut q, 4);
        assert!(q.is_empty());
        pool.push_copy(&mut q, b"dddd");
        pool.release(&mut q);
        assert_eq!(pool.queued_bytes(), 0);
        assert_eq!(pool.free_nodes.len(), pool.nodes.len());
    }

    #[test]
    fn small_frames_behind_each_other_coalesce_and_a_lone_one_is_not_copied() {
        let mut pool = SendPool::new();
        let mut q = SendQueue::default();
        // A lone small frame: by reference, no block.
        pool.push_shared(&mut q, Bytes::from_static(b"one"), 1);
        assert_eq!(pool.blocks_allocated(), 0);
        let p = pool.prepare(&mut q).unwrap();
        assert_eq!(gather(p, usize::MAX), b"one");
        // Behind the frame in flight: the first by reference, the rest copied behind it.
        let mut expected = Vec::new();
        for i in 0..200u32 {
            let frame = Bytes::from(format!("frame-{i};"));
            expected.extend_from_slice(&frame);
            pool.push_shared(&mut q, frame, 1);
        }
        // A large frame stays shared; small ones after it start a new block.
        let big = Bytes::from(vec![b'B'; COPY_MAX + 1]);
        expected.extend_from_slice(&big);
        pool.push_shared(&mut q, big, 1);
        pool.push_shared(&mut q, Bytes::from_static(b"after"), 1);
        expected.extend_from_slice(b"after");
        pool.push_shared(&mut q, Bytes::from_static(b"!"), 1);
        expected.extend_from_slice(b"!");
        assert_eq!(q.bytes as usize, 3 + expected.len());
        pool.complete(&mut q, 3);
        let live = pool.nodes.len() - pool.free_nodes.len();
        assert!(live <= 4, "200 small frames in {live} nodes");
        let mut got = Vec::new();
        while !q.is_empty() {
            let p = pool.prepare(&mut q).unwrap();
            let all = gather(p, usize::MAX);
            got.extend_from_slice(&all);
            pool.complete(&mut q, all.len());
        }
        assert_eq!(got, expected);
        assert_eq!(pool.queued_bytes(), 0);
        assert_eq!(pool.free_nodes.len(), pool.nodes.len());
    }

    /// Random pushes (shared small and large, copies) and random short sends: the bytes leave
    /// in order, exactly once, and the accounting returns to zero.
    #[test]
    fn random_pushes_and_short_sends_keep_order_and_accounting() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..200 {
            let mut pool = SendPool::new();
            let mut q = SendQueue::default();
            let (mut expected, mut got) = (Vec::new(), Vec::new());
            let mut in_flight: Option<Vec<u8>> = None;
            for step in 0..300u32 {
                match next() % 4 {
                    0 | 1 => {
                        let len = (next() % (2 * COPY_MAX as u64)) as usize + 1;
                        let data: Vec<u8> = (0..len).map(|i| (step as usize + i) as u8).collect();
                        expected.extend_from_slice(&data);
                        if next() % 3 == 0 {
                            pool.push_copy(&mut q, &data);
                        } else {
                            pool.push_shared(&mut q, Bytes::from(data), 1);
                        }
                    }
                    2 if in_flight.is_none() => {
                        in_flight = pool.prepare(&mut q).map(|p| gather(p, usize::MAX));
                    }
                    _ => {
                        if let Some(all) = in_flight.take() {
                            let n = (next() as usize % (all.len() + 1)).max(1);
                            got.extend_from_slice(&all[..n]);
                            pool.complete(&mut q, n);
                        }
                    }
                }
            }
            if let Some(all) = in_flight.take() {
                got.extend_from_slice(&all);
                pool.complete(&mut q, all.len());
            }
            while let Some(p) = pool.prepare(&mut q) {
                let all = gather(p, usize::MAX);
                got.extend_from_slice(&all);
                pool.complete(&mut q, all.len());
            }
            assert_eq!(got, expected);
            assert_eq!((q.bytes, pool.queued_bytes()), (0, 0));
            assert_eq!(pool.free_nodes.len(), pool.nodes.len());
        }
    }

    #[test]
    fn gathers_at_most_max_iov() {
        let mut pool = SendPool::new();
        let mut q = SendQueue::default();
        // Frames too large to be copied: one chunk each.
        let frame = Bytes::from(vec![b'x'; COPY_MAX + 1]);
        for _ in 0..(MAX_IOV + 10) {
            pool.push_shared(&mut q, frame.clone(), 1);
        }
        let n = pool.prepare(&mut q).unwrap().chunks();
        assert_eq!(n, MAX_IOV);
        pool.complete(&mut q, MAX_IOV * frame.len());
        let n = pool.prepare(&mut q).unwrap().chunks();
        assert_eq!(n, 10);
        pool.complete(&mut q, 10 * frame.len());
        assert!(q.is_empty());
    }
}
