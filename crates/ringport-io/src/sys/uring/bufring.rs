//! The per-shard provided-buffer ring (io_uring's `IORING_REGISTER_PBUF_RING`).
//!
//! The kernel picks a buffer from this ring only when data arrives for a multishot receive,
//! so an idle connection holds no receive memory — the io_uring form of IOCP's zero-byte
//! receive. The shard hands the filled buffer to its handler and puts it back right after
//! (`recycle`), publishing the new tail once per batch of completions.
//!
//! The kernel takes buffers in ring order (FIFO), so every buffer becomes resident once
//! `count` receives have passed, however few are in use at a time. [`BufRing::trim`] gives
//! their pages back (`MADV_DONTNEED`) when the shard has been quiet; the driver decides when
//! that is safe (see `UringDriver::trim_recv_buffers`).

use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::IoUring;

/// The kernel's `struct io_uring_buf`. In entry 0, `resv` is the ring's tail, which the kernel
/// reads concurrently: entries are written field by field through raw pointers, never through
/// a `&mut` to a whole entry (that would alias the tail).
#[repr(C)]
struct RawBuf {
    addr: u64,
    len: u32,
    bid: u16,
    resv: u16,
}

const _: () = assert!(std::mem::size_of::<RawBuf>() == std::mem::size_of::<BufRingEntry>());

/// An anonymous private mapping, unmapped on drop.
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    fn new(len: usize) -> io::Result<Mapping> {
        // SAFETY: an anonymous private mapping with no fixed address has no preconditions;
        // the result is checked against MAP_FAILED.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
        })
    }
}

/// The system's page size.
fn page_size() -> usize {
    // SAFETY: sysconf has no memory preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: ptr/len are exactly what mmap returned; nothing uses the region after drop:
        // the driver drops a `BufRing` only after closing its ring with no operation in
        // flight, and leaks it otherwise (see `Driver`'s `Drop`).
        unsafe {
            libc::munmap(self.ptr.cast(), self.len);
        }
    }
}

pub(crate) struct BufRing {
    /// The ring of `BufRingEntry` shared with the kernel (page aligned).
    ring: Mapping,
    /// The buffers themselves, `count * size` bytes.
    bufs: Mapping,
    count: u16,
    size: u32,
    group: u16,
    /// Our copy of the tail; published to the kernel by `publish`.
    tail: u16,
    /// The tail last published, so `publish` is a no-op when nothing was recycled.
    published: u16,
    /// Buffers the kernel handed us in completions and we have not recycled.
    lent: u16,
    /// Free buffers set aside for re-armed receives since the last publish.
    reserved: u16,
    /// A completion handed us a buffer since the last [`BufRing::trim`]: pages may be
    /// resident again.
    touched: bool,
    /// `mincore` output for the buffer mapping (one byte per page), allocated at the first
    /// trim.
    residency: Vec<u8>,
}

impl BufRing {
    /// Maps and registers a ring of `count` (power of two) buffers of `size` bytes as buffer
    /// group `group` on `ring`.
    pub fn new(uring: &IoUring, group: u16, count: u16, size: u32) -> io::Result<BufRing> {
        let ring_len = (count as usize * std::mem::size_of::<BufRingEntry>()).max(4096);
        let ring = Mapping::new(ring_len)?;
        let bufs = Mapping::new(count as usize * size as usize)?;
        let mut br = BufRing {
            ring,
            bufs,
            count,
            size,
            group,
            tail: 0,
            published: 0,
            lent: 0,
            reserved: 0,
            touched: false,
            residency: Vec::new(),
        };
        // SAFETY: the ring mapping is page aligned, holds `count` entries and stays mapped
        // until after the ring (and with it this registration) is gone — see Driver's field
        // order.
        unsafe {
            uring
                .submitter()
                .register_buf_ring_with_flags(br.ring.ptr as u64, count, group, 0)?;
        }
        for bid in 0..count {
            br.push(bid);
        }
        br.publish();
        Ok(br)
    }

    pub fn group(&self) -> u16 {
        self.group
    }

    fn entries(&self) -> *mut RawBuf {
        self.ring.ptr.cast()
    }

    fn push(&mut self, bid: u16) {
        let idx = (self.tail & (self.count - 1)) as usize;
        let addr = self.bufs.ptr as u64 + u64::from(bid) * u64::from(self.size);
        // SAFETY: idx < count, so the entry lies inside the ring mapping (page aligned, so
        // every field is aligned). The kernel reads only entries between its head and the
        // published tail, and this one is past the published tail. Only addr, len and bid are
        // written, each through its own raw pointer: entry 0's `resv` (the tail) is untouched.
        unsafe {
            let e = self.entries().add(idx);
            std::ptr::addr_of_mut!((*e).addr).write(addr);
            std::ptr::addr_of_mut!((*e).len).write(self.size);
            std::ptr::addr_of_mut!((*e).bid).write(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Returns buffer `bid` to the kernel (visible after the next `publish`).
    pub fn recycle(&mut self, bid: u16) {
        self.lent = self.lent.saturating_sub(1);
        self.push(bid);
    }

    /// A completion handed us one of the ring's buffers.
    pub fn lent_one(&mut self) {
        self.lent = self.lent.saturating_add(1);
        self.touched = true;
    }

    /// Buffers handed to us by completions and not recycled yet.
    pub fn lent(&self) -> u16 {
        self.lent
    }

    /// A completion handed us a buffer since the last trim.
    pub fn touched(&self) -> bool {
        self.touched
    }

    /// Bytes of the buffer mapping resident in memory (`mincore`).
    pub fn resident_bytes(&mut self) -> io::Result<u64> {
        let page = page_size();
        let pages = self.bufs.len.div_ceil(page);
        self.residency.resize(pages, 0);
        // SAFETY: `bufs.ptr` is page aligned (from mmap) and `bufs.len` bytes of it are
        // mapped while `self` lives; `residency` has one byte for each of those pages, which
        // is what the kernel writes.
        let r = unsafe {
            libc::mincore(
                self.bufs.ptr.cast(),
                self.bufs.len,
                self.residency.as_mut_ptr(),
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        let resident = self.residency.iter().filter(|&&b| b & 1 != 0).count();
        Ok((resident * page) as u64)
    }

    /// Gives the pages of every buffer back to the kernel (`MADV_DONTNEED`: the next write
    /// into one, by the kernel's receive copy, finds a fresh zero-filled page). Returns the
    /// resident bytes released.
    ///
    /// # Safety
    /// No buffer may hold bytes anyone will still read, and the kernel must not write into
    /// any of them until this returns: no buffer lent (`lent() == 0`), every completion that
    /// carried one of them harvested and handled, and no kernel copy into them possible
    /// before the caller's next `io_uring_enter` on this ring (the ring set up with
    /// DEFER_TASKRUN, no enter since the completions were harvested). The caller's driver
    /// checks this (`UringDriver::trim_recv_buffers`).
    pub unsafe fn trim(&mut self) -> io::Result<u64> {
        debug_assert_eq!(self.lent, 0);
        let resident = self.resident_bytes()?;
        // SAFETY: the range is exactly the buffer mapping (page aligned, mapped while `self`
        // lives). No Rust reference into it exists: a slice from `get` lives only until its
        // buffer is recycled, and none is lent (the caller's contract). The kernel does not
        // write into it during the call (the caller's contract), and any later write just
        // faults in a zero page. MADV_DONTNEED on a private anonymous mapping keeps the
        // mapping valid and makes its pages read as zeros: the bytes were all consumed.
        let r = unsafe { libc::madvise(self.bufs.ptr.cast(), self.bufs.len, libc::MADV_DONTNEED) };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        self.touched = false;
        Ok(resident)
    }

    /// Sets a buffer aside for a receive re-armed now, if one is free: neither lent to us
    /// nor set aside already (recycled ones count as free: the shard publishes them before it
    /// re-arms). A receive armed earlier may still take the buffer first: this bounds the
    /// re-arms per turn by the ring's size, it does not promise a buffer.
    pub fn reserve(&mut self) -> bool {
        let free = self.lent.saturating_add(self.reserved) < self.count;
        self.reserved += u16::from(free);
        free
    }

    /// Makes recycled buffers visible to the kernel (and ends the turn's reservations).
    pub fn publish(&mut self) {
        self.reserved = 0;
        if self.tail == self.published {
            return;
        }
        // SAFETY: the tail is entry 0's `resv`, inside the page-aligned ring mapping (valid,
        // 2-byte aligned, mapped while `self` lives); it is only ever accessed atomically
        // (here, and by the kernel), never through a plain reference.
        let tail = unsafe { &*(std::ptr::addr_of!((*self.entries()).resv) as *const AtomicU16) };
        tail.store(self.tail, Ordering::Release);
        self.published = self.tail;
    }

    /// The bytes the kernel wrote into buffer `bid`.
    ///
    /// # Safety
    /// `bid` must come from a completion of this ring's group and not have been recycled
    /// yet (so the kernel will not write to it), and `len` must be that completion's result.
    /// The slice must not outlive the recycle.
    pub unsafe fn get<'a>(&self, bid: u16, len: usize) -> &'a [u8] {
        debug_assert!(bid < self.count && len <= self.size as usize);
        // SAFETY: the caller guarantees the buffer is ours and filled up to len; it lies
        // inside the buffer mapping because bid < count.
        unsafe {
            std::slice::from_raw_parts(self.bufs.ptr.add(bid as usize * self.size as usize), len)
        }
    }
}
