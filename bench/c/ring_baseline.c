// C baseline for the vdpa-ts virtqueue benchmark.
//
// One thread plays both sides of a virtqueue (virtio 1.x split and packed formats) over a 16 MiB "guest
// memory" reached through an IOTLB, and times the full round trip of every request:
//
//   driver add -> driver publish (+ kick decision) -> device pop (walk, checks, translate every buffer)
//   -> device copy -> device push used -> device publish used (+ notify decision) -> driver reclaim
//
// The TypeScript engine benchmark does the same work, so the two numbers give a JS/C ratio measured in the
// same run. The driver side follows Linux drivers/virtio/virtio_ring.c, the device side follows QEMU
// hw/virtio/virtio.c and Linux drivers/vhost/vhost.c; each function says which part it mirrors.
//
// Build: gcc -O2 -std=c11 -Wall -Wextra -o ring_baseline ring_baseline.c
// Usage: ./ring_baseline [--seconds S] [--case NAME]... [--list]
// Output (stdout): one line per case, {"case":"split/b32/c1/copy0","mreqs":123.456}
// Diagnostics (stderr): one line per case with the counters the timed loop produced, so none of its work
// is dead code. Exit status: 0 on success, 1 on any ring/translation/verification error, 2 on bad usage.
//
// Fixed choices the TS benchmark must share to be comparable:
//  - Rings in IOTLB entry 0: split desc +0x0000, avail +0x1000, used +0x2000; packed desc +0x0000, driver
//    event +0x1000, device event +0x2000 (offsets from IOVA 0x40000000). The device translates each ring
//    area once at setup. Request slot s = (request number mod 256) owns IOVA 0x40100000 + s * 8192: c=1 is
//    one 2048-byte writable buffer at +0; c=3 is a 16-byte readable header at +0, a 2048-byte writable data
//    buffer at +64 and a 16-byte writable status at +2112.
//  - Event index: split avail_event and used_event stay 0, packed device and driver event structures stay
//    {off_wrap 0, flags ENABLE}; nobody rewrites them. The decisions are evaluated and counted only.
//  - Barriers: split publishes avail idx / used idx once per batch with a seq-cst store; packed stores each
//    chain's head flags seq-cst (driver) and the first used element's flags seq-cst at the end of a device
//    batch; event fields and avail/used idx are read with atomic loads, everything else is plain.
//  - One iteration = driver adds `batch` chains, publishes (+ kick decision); device pops every available
//    chain, copies, pushes used, publishes (+ notify decision); driver reclaims every used chain. The timed
//    loop checks token and used len on every completion; bytes are sampled only in the untimed warm-up and
//    tail (see main()).
//
// Ring memory and descriptors are little-endian by spec (virtio 1.x, 2.4 "Virtqueues" / "Endianness");
// this program accesses them with native loads and refuses to run on a big-endian host.

#define _POSIX_C_SOURCE 200809L

#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

// ---------------------------------------------------------------------------------------------------------
// Benchmark geometry (shared with the TypeScript side; see the report in bench/c-baseline.ts)

#define QSZ 256u                       // queue size, a power of two as split rings require
#define MEM_SIZE (16u << 20)           // guest memory: 16 MiB, 4096-aligned
#define IOVA_BASE 0x40000000ull        // IOVA of guest memory offset 0
#define TLB_ENTRY_SIZE (256u << 10)    // the IOTLB maps guest memory as 64 entries of 256 KiB
#define TLB_ENTRIES (MEM_SIZE / TLB_ENTRY_SIZE)
#define MAX_SEGS 64u                   // readable + writable segments of one chain (like an iovec limit)

// Ring areas, all inside IOTLB entry 0 and on their own 4 KiB page each. Alignment required by virtio 1.x
// 2.7.1 / 2.8: split desc 16, avail 2, used 4; packed desc 16, event suppression structures 4.
#define SPLIT_DESC_OFF 0x0000u         // 256 * 16 = 4096 bytes
#define SPLIT_AVAIL_OFF 0x1000u        // 6 + 2 * 256 = 518 bytes (flags, idx, ring[256], used_event)
#define SPLIT_USED_OFF 0x2000u         // 6 + 8 * 256 = 2054 bytes (flags, idx, ring[256], avail_event)
#define PACKED_DESC_OFF 0x0000u        // 256 * 16 = 4096 bytes
#define PACKED_DRIVER_EVENT_OFF 0x1000u // driver area: written by the driver, read by the device
#define PACKED_DEVICE_EVENT_OFF 0x2000u // device area: written by the device, read by the driver

// Per-request buffers: request slot s (0..255) owns 8 KiB at IOVA 0x40100000 + s * 8192. 8 KiB divides the
// 256 KiB IOTLB entries, so no bench buffer crosses an entry (the crossing path is covered by selftest()).
#define BUF_IOVA 0x40100000ull
#define BUF_STRIDE 8192u
#define DATA_LEN 2048u
#define HDR_LEN 16u
#define STATUS_LEN 16u
#define C3_DATA_OFF 64u                // c=3: header at +0, data at +64, status at +64+2048
#define C3_STATUS_OFF (C3_DATA_OFF + DATA_LEN)
#define SRC_LEN 2048u                  // the device's private source buffer

// Descriptor flags (virtio 1.x 2.7.5 and 2.8.1), event suppression flags (2.8.10).
#define VRING_DESC_F_NEXT 1u
#define VRING_DESC_F_WRITE 2u
#define VRING_DESC_F_INDIRECT 4u
#define VRING_PACKED_DESC_F_AVAIL (1u << 7)
#define VRING_PACKED_DESC_F_USED (1u << 15)
#define VRING_PACKED_EVENT_FLAG_ENABLE 0u
#define VRING_PACKED_EVENT_FLAG_DISABLE 1u
#define VRING_PACKED_EVENT_FLAG_DESC 2u
#define VRING_PACKED_EVENT_F_WRAP_CTR 15

enum { PERM_READ = 1, PERM_WRITE = 2, PERM_RW = 3 };

enum err {
  OK = 0,
  E_IOTLB_MISS = -1,
  E_IOTLB_PERM = -2,
  E_ADDR_OVERFLOW = -3,
  E_TOO_MANY_SEGS = -4,
  E_DESC_LOOP = -5,
  E_DESC_OUT_OF_RANGE = -6,
  E_INDIRECT = -7,
  E_WRITE_BEFORE_READ = -8,
  E_LEN_OVERFLOW = -9,
  E_AVAIL_IDX_JUMP = -10,
  E_USED_IDX_JUMP = -11,
  E_USED_ID_INVALID = -12,
  E_NO_SPACE = -13,
  E_COPY_TOO_BIG = -14,
  E_VERIFY = -15,
};

static const char *err_name(int e) {
  switch (e) {
  case E_IOTLB_MISS: return "IOTLB_MISS";
  case E_IOTLB_PERM: return "IOTLB_PERM";
  case E_ADDR_OVERFLOW: return "ADDR_OVERFLOW";
  case E_TOO_MANY_SEGS: return "TOO_MANY_SEGS";
  case E_DESC_LOOP: return "DESC_LOOP";
  case E_DESC_OUT_OF_RANGE: return "DESC_OUT_OF_RANGE";
  case E_INDIRECT: return "INDIRECT (not negotiated in this bench)";
  case E_WRITE_BEFORE_READ: return "WRITE_BEFORE_READ";
  case E_LEN_OVERFLOW: return "LEN_OVERFLOW";
  case E_AVAIL_IDX_JUMP: return "AVAIL_IDX_JUMP";
  case E_USED_IDX_JUMP: return "USED_IDX_JUMP";
  case E_USED_ID_INVALID: return "USED_ID_INVALID";
  case E_NO_SPACE: return "NO_SPACE";
  case E_COPY_TOO_BIG: return "COPY_TOO_BIG";
  case E_VERIFY: return "VERIFY";
  default: return "?";
  }
}

static void die(const char *what, int e) {
  fprintf(stderr, "ring_baseline: %s: %s\n", what, err_name(e));
  exit(1);
}

// vring_need_event() from include/uapi/linux/virtio_ring.h (virtio 1.x 2.7.10): notify when new_idx has
// just passed event_idx, i.e. event_idx is in [old, new).
static inline bool vring_need_event(uint16_t event_idx, uint16_t new_idx, uint16_t old) {
  return (uint16_t)(new_idx - event_idx - 1) < (uint16_t)(new_idx - old);
}

// ---------------------------------------------------------------------------------------------------------
// IOTLB: a sorted array of [first, last] (inclusive, like vhost_iotlb_map) -> host pointer, perm, kept as
// parallel arrays like src/memory/iotlb.ts. Every lookup is a binary search; there is no last-hit cache.

struct iotlb {
  uint64_t first[TLB_ENTRIES];
  uint64_t last[TLB_ENTRIES];
  uint8_t *host[TLB_ENTRIES];
  uint32_t perm[TLB_ENTRIES];
  int32_t n;
};

struct seg {
  uint8_t *ptr;
  uint32_t len;
};

// Translates [iova, iova + len) for `access` and appends one segment per IOTLB entry touched to segs[*nsegs..],
// as vhost's translate_desc() does (an iovec element per iotlb node), failing once *nsegs would pass `max`.
// Zero-length buffers yield no segment.
static inline int translate(const struct iotlb *t, uint64_t iova, uint32_t len, uint32_t access,
                            struct seg *segs, uint32_t *nsegs, uint32_t max) {
  if (len == 0) return OK;
  uint64_t last = iova + len - 1;
  if (last < iova) return E_ADDR_OVERFLOW;
  uint32_t n = *nsegs;
  for (;;) {
    // Last entry whose first address is <= iova.
    int32_t lo = 0, hi = t->n - 1;
    while (lo <= hi) {
      int32_t mid = (int32_t)((uint32_t)(lo + hi) >> 1);
      if (t->first[mid] <= iova) lo = mid + 1;
      else hi = mid - 1;
    }
    if (hi < 0 || t->last[hi] < iova) return E_IOTLB_MISS;
    if ((t->perm[hi] & access) != access) return E_IOTLB_PERM;
    if (n >= max) return E_TOO_MANY_SEGS;
    segs[n].ptr = t->host[hi] + (iova - t->first[hi]);
    if (last <= t->last[hi]) {
      segs[n].len = (uint32_t)(last - iova + 1);
      *nsegs = n + 1;
      return OK;
    }
    // The buffer runs past this entry: the rest must be mapped by whatever entry starts right after it.
    segs[n].len = (uint32_t)(t->last[hi] - iova + 1);
    n++;
    iova = t->last[hi] + 1;
  }
}

// A popped chain as the device sees it (QEMU's VirtQueueElement without the allocation).
struct elem {
  uint32_t id;      // split: head index; packed: buffer id
  uint32_t ndescs;  // packed: descriptors the chain occupies in the ring
  uint32_t nread, nwrite;
  uint32_t total;   // sum of descriptor lengths
  struct seg read[MAX_SEGS];
  struct seg write[MAX_SEGS];
};

// The device's work on a request: scatter `n` bytes of its private source into the writable segments in
// order, and report used len = n (copy 0 touches no data).
static inline int device_copy(const struct elem *e, const uint8_t *src, uint32_t n) {
  uint32_t off = 0;
  for (uint32_t i = 0; i < e->nwrite && off < n; i++) {
    uint32_t k = e->write[i].len;
    if (k > n - off) k = n - off;
    memcpy(e->write[i].ptr, src + off, k);
    off += k;
  }
  return off == n ? OK : E_COPY_TOO_BIG;
}

// The driver's request: a scatter list (out buffers first, then in buffers) like Linux's virtqueue_add().
struct sg {
  uint64_t addr;
  uint32_t len;
};

// ---------------------------------------------------------------------------------------------------------
// Split ring (virtio 1.x 2.7)

struct vring_desc {
  uint64_t addr;
  uint32_t len;
  uint16_t flags;
  uint16_t next;
};

struct vring_used_elem {
  uint32_t id;
  uint32_t len;
};

struct split_driver {
  struct vring_desc *desc;
  uint16_t *avail_idx, *avail_ring, *used_event;
  const uint16_t *used_idx, *avail_event;
  const struct vring_used_elem *used_ring;
  uint16_t free_head, num_free, avail_idx_shadow, num_added, last_used_idx;
  uint32_t token[QSZ];  // per head, 0 = not in flight (Linux: desc_state[head].data)
  uint64_t kicks;
};

struct split_device {
  const struct vring_desc *desc;
  const uint16_t *avail_idx, *avail_ring, *used_event;
  uint16_t *used_idx, *avail_event;
  struct vring_used_elem *used_ring;
  const struct iotlb *tlb;
  uint16_t last_avail_idx, used_idx_shadow, signalled_used;  // QEMU: last_avail_idx, used_idx, signalled_used
  uint64_t notifies;
};

// Linux virtqueue_add_split() without indirect descriptors: take descriptors from the free list chained
// through desc.next, fill them, remember the token for the head, put the head in the avail ring. Unlike
// Linux (which publishes avail idx per add), the bench publishes once per batch in split_publish_kick().
static inline int split_add(struct split_driver *d, const struct sg *sgs, uint32_t out, uint32_t in,
                            uint32_t token) {
  uint32_t total = out + in;
  if (total == 0 || d->num_free < total) return E_NO_SPACE;
  uint16_t head = d->free_head, i = head;
  for (uint32_t k = 0; k < total; k++) {
    struct vring_desc *dd = &d->desc[i];
    uint16_t next = dd->next;  // the free-list link doubles as the chain link
    dd->addr = sgs[k].addr;
    dd->len = sgs[k].len;
    dd->flags = (uint16_t)((k + 1 < total ? VRING_DESC_F_NEXT : 0) | (k >= out ? VRING_DESC_F_WRITE : 0));
    dd->next = next;
    i = next;
  }
  d->num_free = (uint16_t)(d->num_free - total);
  d->free_head = i;
  d->token[head] = token;
  d->avail_ring[d->avail_idx_shadow & (QSZ - 1)] = head;
  d->avail_idx_shadow++;
  d->num_added++;
  return OK;
}

// Publish avail idx, then Linux virtqueue_kick_prepare_split() with VIRTIO_RING_F_EVENT_IDX. The seq-cst
// store is the virtio_wmb() before the idx write and the virtio_mb() before reading avail_event in one
// (JS Atomics.store is seq-cst too); the avail_event read is seq-cst so C11 orders it after that store.
static inline bool split_publish_kick(struct split_driver *d) {
  __atomic_store_n(d->avail_idx, d->avail_idx_shadow, __ATOMIC_SEQ_CST);
  uint16_t new_idx = d->avail_idx_shadow, old = (uint16_t)(new_idx - d->num_added);
  d->num_added = 0;
  bool kick = vring_need_event(__atomic_load_n(d->avail_event, __ATOMIC_SEQ_CST), new_idx, old);
  d->kicks += kick;
  return kick;
}

// One chain from the avail ring: QEMU virtqueue_split_pop() / vhost_get_vq_desc() without indirect
// support. Each descriptor is read once into locals (no double fetch).
static inline int split_pop_one(struct split_device *v, uint16_t avail_pos, struct elem *e) {
  uint16_t head = v->avail_ring[avail_pos & (QSZ - 1)];
  if (head >= QSZ) return E_DESC_OUT_OF_RANGE;
  uint32_t i = head, count = 0, nread = 0, nwrite = 0;
  uint64_t total = 0;
  bool seen_write = false;
  for (;;) {
    const struct vring_desc *dp = &v->desc[i];
    uint64_t addr = dp->addr;
    uint32_t len = dp->len;
    uint16_t flags = dp->flags, next = dp->next;
    if (++count > QSZ) return E_DESC_LOOP;
    if (flags & VRING_DESC_F_INDIRECT) return E_INDIRECT;  // VIRTIO_RING_F_INDIRECT_DESC not offered
    total += len;
    if (total > UINT32_MAX) return E_LEN_OVERFLOW;
    // Readable and writable segments share the MAX_SEGS budget. Device-readable descriptors must come
    // before device-writable ones (virtio 1.x 2.7.4.2); a zero-length write descriptor counts as a write.
    int r;
    if (flags & VRING_DESC_F_WRITE) {
      seen_write = true;
      r = translate(v->tlb, addr, len, PERM_WRITE, e->write, &nwrite, MAX_SEGS - nread);
    } else {
      if (seen_write) return E_WRITE_BEFORE_READ;
      r = translate(v->tlb, addr, len, PERM_READ, e->read, &nread, MAX_SEGS);
    }
    if (r != OK) return r;
    if (!(flags & VRING_DESC_F_NEXT)) break;
    if (next >= QSZ) return E_DESC_OUT_OF_RANGE;
    i = next;
  }
  e->id = head;
  e->ndescs = count;
  e->nread = nread;
  e->nwrite = nwrite;
  e->total = (uint32_t)total;
  return OK;
}

// QEMU virtqueue_split_fill(): used.ring[shadow % num] = {id, len}.
static inline void split_push(struct split_device *v, uint32_t id, uint32_t len) {
  struct vring_used_elem *u = &v->used_ring[v->used_idx_shadow & (QSZ - 1)];
  u->id = id;
  u->len = len;
  v->used_idx_shadow++;
}

// QEMU virtqueue_split_flush() + virtio_split_should_notify(): publish used idx (seq-cst: smp_wmb before
// the idx write, smp_mb before reading used_event), then vring_need_event(used_event, new, old).
static inline bool split_publish_notify(struct split_device *v) {
  uint16_t old = v->signalled_used, new_idx = v->used_idx_shadow;
  v->signalled_used = new_idx;
  __atomic_store_n(v->used_idx, new_idx, __ATOMIC_SEQ_CST);
  bool notify = vring_need_event(__atomic_load_n(v->used_event, __ATOMIC_SEQ_CST), new_idx, old);
  v->notifies += notify;
  return notify;
}

// Device side of one batch: load avail idx once, pop/copy/push every available chain, publish once.
static inline int split_device_run(struct split_device *v, const uint8_t *src, uint32_t copy,
                                   struct elem *e, uint32_t *popped) {
  uint16_t avail = __atomic_load_n(v->avail_idx, __ATOMIC_ACQUIRE);
  uint16_t pending = (uint16_t)(avail - v->last_avail_idx);
  if (pending > QSZ) return E_AVAIL_IDX_JUMP;  // QEMU: "Guest moved used index from %u to %u"
  for (uint16_t k = 0; k < pending; k++) {
    int r = split_pop_one(v, v->last_avail_idx, e);
    if (r != OK) return r;
    v->last_avail_idx++;
    r = device_copy(e, src, copy);
    if (r != OK) return r;
    split_push(v, e->id, copy);
  }
  *popped = pending;
  if (pending) split_publish_notify(v);
  return OK;
}

// Linux detach_buf_split(): walk the chain to its end through desc.flags/next and put it back on the head
// of the free list.
static inline void split_detach(struct split_driver *d, uint16_t head) {
  uint16_t i = head, n = 1;
  while (d->desc[i].flags & VRING_DESC_F_NEXT) {
    i = d->desc[i].next;
    n++;
  }
  d->desc[i].next = d->free_head;
  d->free_head = head;
  d->num_free = (uint16_t)(d->num_free + n);
  d->token[head] = 0;
}

// ---------------------------------------------------------------------------------------------------------
// Packed ring (virtio 1.x 2.8)

struct vring_packed_desc {
  uint64_t addr;
  uint32_t len;
  uint16_t id;
  uint16_t flags;
};

struct vring_packed_desc_event {
  uint16_t off_wrap;
  uint16_t flags;
};

struct packed_driver {
  struct vring_packed_desc *desc;
  struct vring_packed_desc_event *driver_event;
  const struct vring_packed_desc_event *device_event;
  uint16_t next_avail_idx, avail_used_flags, num_added, num_free, last_used_idx, free_top;
  bool avail_wrap_counter, used_wrap_counter;
  uint16_t free_ids[QSZ];  // stack of free buffer ids
  uint16_t state_num[QSZ]; // descriptors used by the buffer with this id (Linux desc_state[id].num)
  uint32_t token[QSZ];     // 0 = not in flight (Linux desc_state[id].data)
  uint64_t kicks;
};

struct packed_device {
  struct vring_packed_desc *desc;
  const struct vring_packed_desc_event *driver_event;
  struct vring_packed_desc_event *device_event;
  const struct iotlb *tlb;
  uint16_t next_avail, next_used;
  bool avail_wrap, used_wrap;
  // The batch being pushed (QEMU keeps used_elems[] and writes them in virtqueue_packed_flush()).
  uint16_t batch_pos, batch_count, first_pos, first_flags;
  bool batch_wrap;
  uint64_t notifies;
};

// Linux virtqueue_add_packed() without indirect descriptors: every descriptor of the chain carries the
// buffer id; the head's flags are written last so the chain becomes visible at once (virtio 1.x 2.8.21).
// Linux uses virtio_wmb() + plain store; the bench uses a seq-cst store like JS Atomics.store.
static inline int packed_add(struct packed_driver *d, const struct sg *sgs, uint32_t out, uint32_t in,
                             uint32_t token) {
  uint32_t total = out + in;
  if (total == 0 || d->num_free < total || d->free_top == 0) return E_NO_SPACE;
  uint16_t id = d->free_ids[--d->free_top];
  uint16_t head = d->next_avail_idx, i = head, head_flags = 0, auf = d->avail_used_flags;
  for (uint32_t k = 0; k < total; k++) {
    uint16_t flags = (uint16_t)(auf | (k + 1 < total ? VRING_DESC_F_NEXT : 0) |
                                (k >= out ? VRING_DESC_F_WRITE : 0));
    struct vring_packed_desc *dd = &d->desc[i];
    dd->addr = sgs[k].addr;
    dd->len = sgs[k].len;
    dd->id = id;
    if (i == head) head_flags = flags;
    else dd->flags = flags;
    if (++i >= QSZ) {
      i = 0;
      auf ^= VRING_PACKED_DESC_F_AVAIL | VRING_PACKED_DESC_F_USED;
      d->avail_wrap_counter = !d->avail_wrap_counter;
    }
  }
  d->avail_used_flags = auf;
  d->next_avail_idx = i;
  d->num_free = (uint16_t)(d->num_free - total);
  d->num_added = (uint16_t)(d->num_added + total);
  d->state_num[id] = (uint16_t)total;
  d->token[id] = token;
  __atomic_store_n(&d->desc[head].flags, head_flags, __ATOMIC_SEQ_CST);
  return OK;
}

// Linux virtqueue_kick_prepare_packed(): read the device event structure (seq-cst so it is ordered after
// the head flags store, Linux's virtio_mb()) and evaluate DISABLE / ENABLE / DESC with wrap adjustment.
static inline bool packed_kick_prepare(struct packed_driver *d) {
  uint16_t new_idx = d->next_avail_idx, old = (uint16_t)(new_idx - d->num_added);
  d->num_added = 0;
  uint16_t flags = __atomic_load_n(&d->device_event->flags, __ATOMIC_SEQ_CST);
  bool kick;
  if (flags != VRING_PACKED_EVENT_FLAG_DESC) {
    kick = flags != VRING_PACKED_EVENT_FLAG_DISABLE;
  } else {
    uint16_t off_wrap = __atomic_load_n(&d->device_event->off_wrap, __ATOMIC_RELAXED);
    bool wrap = off_wrap >> VRING_PACKED_EVENT_F_WRAP_CTR;
    uint16_t event_idx = off_wrap & (uint16_t)~(1u << VRING_PACKED_EVENT_F_WRAP_CTR);
    if (wrap != d->avail_wrap_counter) event_idx = (uint16_t)(event_idx - QSZ);
    kick = vring_need_event(event_idx, new_idx, old);
  }
  d->kicks += kick;
  return kick;
}

// QEMU is_desc_avail(): available when AVAIL matches the wrap counter and USED does not.
static inline bool packed_desc_avail(uint16_t flags, bool wrap) {
  return ((flags & VRING_PACKED_DESC_F_AVAIL) != 0) == wrap &&
         ((flags & VRING_PACKED_DESC_F_USED) != 0) != wrap;
}

// QEMU virtqueue_packed_pop() without indirect support: follow NEXT across consecutive slots, wrapping;
// the buffer id is that of the last descriptor (virtio 1.x 2.8.6). Returns 1 with a chain, 0 when empty.
static inline int packed_pop_one(struct packed_device *v, struct elem *e) {
  uint16_t pos = v->next_avail;
  bool wrap = v->avail_wrap;
  uint16_t flags = __atomic_load_n(&v->desc[pos].flags, __ATOMIC_ACQUIRE);
  if (!packed_desc_avail(flags, wrap)) return 0;
  uint32_t count = 0, nread = 0, nwrite = 0;
  uint64_t total = 0;
  bool seen_write = false;
  uint16_t id;
  for (;;) {
    const struct vring_packed_desc *dp = &v->desc[pos];
    uint64_t addr = dp->addr;
    uint32_t len = dp->len;
    id = dp->id;
    if (++count > QSZ) return E_DESC_LOOP;
    if (flags & VRING_DESC_F_INDIRECT) return E_INDIRECT;
    total += len;
    if (total > UINT32_MAX) return E_LEN_OVERFLOW;
    int r;
    if (flags & VRING_DESC_F_WRITE) {
      seen_write = true;
      r = translate(v->tlb, addr, len, PERM_WRITE, e->write, &nwrite, MAX_SEGS - nread);
    } else {
      if (seen_write) return E_WRITE_BEFORE_READ;
      r = translate(v->tlb, addr, len, PERM_READ, e->read, &nread, MAX_SEGS);
    }
    if (r != OK) return r;
    if (++pos >= QSZ) {
      pos = 0;
      wrap = !wrap;
    }
    if (!(flags & VRING_DESC_F_NEXT)) break;
    flags = v->desc[pos].flags;  // ordered by the acquire load of the head's flags
  }
  v->next_avail = pos;
  v->avail_wrap = wrap;
  e->id = id;
  e->ndescs = count;
  e->nread = nread;
  e->nwrite = nwrite;
  e->total = (uint32_t)total;
  return 1;
}

// QEMU virtqueue_packed_fill_desc(): id, len, then flags = used wrap in AVAIL and USED, WRITE when len != 0.
// The first element of a batch keeps its flags back for packed_publish_notify() (virtqueue_packed_flush()
// writes elements 1..n-1 first and element 0 last, so the driver sees the whole batch at once).
static inline void packed_push(struct packed_device *v, uint32_t id, uint32_t len, uint32_t ndescs) {
  uint16_t pos = v->batch_pos;
  uint16_t flags = (uint16_t)((v->batch_wrap ? VRING_PACKED_DESC_F_AVAIL | VRING_PACKED_DESC_F_USED : 0) |
                              (len ? VRING_DESC_F_WRITE : 0));
  struct vring_packed_desc *dp = &v->desc[pos];
  dp->id = (uint16_t)id;
  dp->len = len;
  if (v->batch_count == 0) {
    v->first_pos = pos;
    v->first_flags = flags;
  } else {
    dp->flags = flags;
  }
  v->batch_count++;
  uint32_t p = pos + ndescs;
  if (p >= QSZ) {
    p -= QSZ;
    v->batch_wrap = !v->batch_wrap;
  }
  v->batch_pos = (uint16_t)p;
}

// End of QEMU virtqueue_packed_flush() + virtio_packed_should_notify(): store the first element's flags
// (seq-cst), advance used idx/wrap, then read the driver event structure: DISABLE -> no, ENABLE -> yes,
// DESC -> vring_packed_need_event() with the wrap adjustment.
static inline bool packed_publish_notify(struct packed_device *v) {
  __atomic_store_n(&v->desc[v->first_pos].flags, v->first_flags, __ATOMIC_SEQ_CST);
  uint16_t old = v->next_used, new_idx = v->batch_pos;
  v->next_used = v->batch_pos;
  v->used_wrap = v->batch_wrap;
  v->batch_count = 0;
  uint16_t flags = __atomic_load_n(&v->driver_event->flags, __ATOMIC_SEQ_CST);
  bool notify;
  if (flags == VRING_PACKED_EVENT_FLAG_DISABLE) {
    notify = false;
  } else if (flags == VRING_PACKED_EVENT_FLAG_ENABLE) {
    notify = true;
  } else {
    uint16_t off_wrap = __atomic_load_n(&v->driver_event->off_wrap, __ATOMIC_RELAXED);
    uint16_t off = off_wrap & (uint16_t)~(1u << VRING_PACKED_EVENT_F_WRAP_CTR);
    if (v->used_wrap != (bool)(off_wrap >> VRING_PACKED_EVENT_F_WRAP_CTR)) off = (uint16_t)(off - QSZ);
    notify = vring_need_event(off, new_idx, old);
  }
  v->notifies += notify;
  return notify;
}

static inline int packed_device_run(struct packed_device *v, const uint8_t *src, uint32_t copy,
                                    struct elem *e, uint32_t *popped) {
  uint32_t n = 0;
  v->batch_pos = v->next_used;
  v->batch_wrap = v->used_wrap;
  for (;;) {
    int r = packed_pop_one(v, e);
    if (r == 0) break;
    if (r < 0) return r;
    if ((r = device_copy(e, src, copy)) != OK) return r;
    packed_push(v, e->id, copy, e->ndescs);
    n++;
  }
  *popped = n;
  if (n) packed_publish_notify(v);
  return OK;
}

// Linux is_used_desc_packed(): used when AVAIL and USED both equal the used wrap counter.
static inline bool packed_desc_used(uint16_t flags, bool wrap) {
  return ((flags & VRING_PACKED_DESC_F_AVAIL) != 0) == wrap &&
         ((flags & VRING_PACKED_DESC_F_USED) != 0) == wrap;
}

// ---------------------------------------------------------------------------------------------------------
// One benchmark case

struct bench {
  bool packed;
  uint32_t batch, chain, copy;
  uint8_t *mem;   // guest memory
  uint8_t *src;   // the device's private source
  struct iotlb tlb;
  struct split_driver sd;
  struct split_device sv;
  struct packed_driver pd;
  struct packed_device pv;
  struct elem elem;
  struct sg sgs[QSZ][3];  // per request slot: the scatter list the driver adds
  uint32_t out, in;
  uint8_t pending[QSZ];   // bench bookkeeping: request slot in flight
  uint32_t seq;           // next request slot (mod 256)
  uint64_t completed, bytes_seen;
};

static inline uint8_t *gpa(struct bench *b, uint64_t iova) { return b->mem + (iova - IOVA_BASE); }

// Maps guest memory into the IOTLB, sets up the rings and each slot's buffers, and translates the ring
// areas once for the device (they are not re-translated per request, like vhost's vq_meta cache).
static void bench_init(struct bench *b, bool packed, uint32_t batch, uint32_t chain, uint32_t copy,
                       uint8_t *mem, uint8_t *src) {
  memset(b, 0, sizeof *b);
  b->packed = packed;
  b->batch = batch;
  b->chain = chain;
  b->copy = copy;
  b->mem = mem;
  b->src = src;
  memset(mem, 0, MEM_SIZE);
  b->tlb.n = TLB_ENTRIES;
  for (uint32_t k = 0; k < TLB_ENTRIES; k++) {
    b->tlb.first[k] = IOVA_BASE + (uint64_t)k * TLB_ENTRY_SIZE;
    b->tlb.last[k] = b->tlb.first[k] + TLB_ENTRY_SIZE - 1;
    b->tlb.host[k] = mem + (size_t)k * TLB_ENTRY_SIZE;
    b->tlb.perm[k] = PERM_RW;
  }
  for (uint32_t s = 0; s < QSZ; s++) {
    uint64_t base = BUF_IOVA + (uint64_t)s * BUF_STRIDE;
    if (chain == 1) {
      b->sgs[s][0] = (struct sg){base, DATA_LEN};
    } else {
      b->sgs[s][0] = (struct sg){base, HDR_LEN};
      b->sgs[s][1] = (struct sg){base + C3_DATA_OFF, DATA_LEN};
      b->sgs[s][2] = (struct sg){base + C3_STATUS_OFF, STATUS_LEN};
    }
  }
  b->out = chain == 1 ? 0 : 1;
  b->in = chain == 1 ? 1 : 2;

  // The device's view of the ring areas: one translation each at setup.
  struct seg s[MAX_SEGS];
  uint32_t n;
#define RING_AREA(iova, size)                                                             \
  (n = 0, translate(&b->tlb, (iova), (size), PERM_RW, s, &n, MAX_SEGS) == OK && n == 1 \
              ? (void *)s[0].ptr                                                      \
              : NULL)

  if (!packed) {
    struct split_driver *d = &b->sd;
    d->desc = (struct vring_desc *)(mem + SPLIT_DESC_OFF);
    uint8_t *avail = mem + SPLIT_AVAIL_OFF, *used = mem + SPLIT_USED_OFF;
    d->avail_idx = (uint16_t *)(avail + 2);
    d->avail_ring = (uint16_t *)(avail + 4);
    d->used_event = (uint16_t *)(avail + 4 + 2 * QSZ);
    d->used_idx = (const uint16_t *)(used + 2);
    d->used_ring = (const struct vring_used_elem *)(used + 4);
    d->avail_event = (const uint16_t *)(used + 4 + 8 * QSZ);
    for (uint32_t i = 0; i < QSZ; i++) d->desc[i].next = (uint16_t)(i + 1);  // free list 0 -> 1 -> ... 255
    d->free_head = 0;
    d->num_free = QSZ;

    struct split_device *v = &b->sv;
    v->tlb = &b->tlb;
    v->desc = RING_AREA(IOVA_BASE + SPLIT_DESC_OFF, 16 * QSZ);
    uint8_t *va = RING_AREA(IOVA_BASE + SPLIT_AVAIL_OFF, 6 + 2 * QSZ);
    uint8_t *vu = RING_AREA(IOVA_BASE + SPLIT_USED_OFF, 6 + 8 * QSZ);
    if (!v->desc || !va || !vu) die("ring translation", E_IOTLB_MISS);
    v->avail_idx = (const uint16_t *)(va + 2);
    v->avail_ring = (const uint16_t *)(va + 4);
    v->used_event = (const uint16_t *)(va + 4 + 2 * QSZ);
    v->used_idx = (uint16_t *)(vu + 2);
    v->used_ring = (struct vring_used_elem *)(vu + 4);
    v->avail_event = (uint16_t *)(vu + 4 + 8 * QSZ);
    // Event index values: avail_event = 0 and used_event = 0 (zeroed memory), never rewritten.
  } else {
    struct packed_driver *d = &b->pd;
    d->desc = (struct vring_packed_desc *)(mem + PACKED_DESC_OFF);
    d->driver_event = (struct vring_packed_desc_event *)(mem + PACKED_DRIVER_EVENT_OFF);
    d->device_event = (const struct vring_packed_desc_event *)(mem + PACKED_DEVICE_EVENT_OFF);
    d->avail_wrap_counter = true;  // virtio 1.x 2.8.1: both wrap counters start at 1
    d->used_wrap_counter = true;
    d->avail_used_flags = VRING_PACKED_DESC_F_AVAIL;
    d->num_free = QSZ;
    d->free_top = QSZ;
    for (uint32_t i = 0; i < QSZ; i++) d->free_ids[i] = (uint16_t)(QSZ - 1 - i);  // pops 0, 1, 2, ...
    d->driver_event->off_wrap = 0;
    d->driver_event->flags = VRING_PACKED_EVENT_FLAG_ENABLE;

    struct packed_device *v = &b->pv;
    v->tlb = &b->tlb;
    v->desc = RING_AREA(IOVA_BASE + PACKED_DESC_OFF, 16 * QSZ);
    v->driver_event = RING_AREA(IOVA_BASE + PACKED_DRIVER_EVENT_OFF, 4);
    v->device_event = RING_AREA(IOVA_BASE + PACKED_DEVICE_EVENT_OFF, 4);
    if (!v->desc || !v->driver_event || !v->device_event) die("ring translation", E_IOTLB_MISS);
    v->avail_wrap = true;
    v->used_wrap = true;
    v->device_event->off_wrap = 0;
    v->device_event->flags = VRING_PACKED_EVENT_FLAG_ENABLE;  // left at ENABLE for the whole run
  }
#undef RING_AREA
}

// Where the copy lands for slot s: the single buffer (c=1) or the data buffer (c=3).
static inline uint8_t *slot_data(struct bench *b, uint32_t s) {
  return gpa(b, b->sgs[s][b->chain == 1 ? 0 : 1].addr);
}

// Driver-side completion of one request: token back exactly once, with the expected used len. With
// `verify`, also check that the copied bytes landed (first, middle and last byte of the copy).
static inline int complete(struct bench *b, uint32_t token, uint32_t len, bool verify) {
  uint32_t slot = token - 1;
  if (slot >= QSZ || !b->pending[slot] || len != b->copy) return E_VERIFY;
  b->pending[slot] = 0;
  b->completed++;
  b->bytes_seen += len;
  if (verify && b->copy) {
    const uint8_t *p = slot_data(b, slot);
    uint32_t n = b->copy;
    if (p[0] != b->src[0] || p[n / 2] != b->src[n / 2] || p[n - 1] != b->src[n - 1]) return E_VERIFY;
  }
  return OK;
}

// One round trip of `batch` requests. With `verify`, the bytes the device must overwrite are poisoned
// first (outside the ring work) so complete() can tell a copy happened.
static int bench_iter(struct bench *b, bool verify) {
  uint32_t batch = b->batch, popped = 0, reclaimed = 0;
  int r;
  for (uint32_t k = 0; k < batch; k++) {
    uint32_t slot = b->seq++ & (QSZ - 1);
    if (verify && b->copy) {
      uint8_t *p = slot_data(b, slot);
      uint32_t n = b->copy;
      p[0] = (uint8_t)~b->src[0];
      p[n / 2] = (uint8_t)~b->src[n / 2];
      p[n - 1] = (uint8_t)~b->src[n - 1];
    }
    b->pending[slot] = 1;
    r = b->packed ? packed_add(&b->pd, b->sgs[slot], b->out, b->in, slot + 1)
                  : split_add(&b->sd, b->sgs[slot], b->out, b->in, slot + 1);
    if (r != OK) return r;
  }

  if (!b->packed) {
    struct split_driver *d = &b->sd;
    split_publish_kick(d);
    if ((r = split_device_run(&b->sv, b->src, b->copy, &b->elem, &popped)) != OK) return r;
    // Linux virtqueue_get_buf_ctx_split(), draining everything published.
    uint16_t used = __atomic_load_n(d->used_idx, __ATOMIC_ACQUIRE);
    uint16_t n = (uint16_t)(used - d->last_used_idx);
    if (n > QSZ) return E_USED_IDX_JUMP;
    for (uint16_t k = 0; k < n; k++) {
      const struct vring_used_elem *u = &d->used_ring[d->last_used_idx & (QSZ - 1)];
      uint32_t id = u->id, len = u->len;
      if (id >= QSZ) return E_USED_ID_INVALID;
      uint32_t token = d->token[id];
      if (token == 0) return E_USED_ID_INVALID;  // "id %u is not a head!"
      split_detach(d, (uint16_t)id);
      d->last_used_idx++;
      if ((r = complete(b, token, len, verify)) != OK) return r;
    }
    reclaimed = n;
  } else {
    struct packed_driver *d = &b->pd;
    packed_kick_prepare(d);
    if ((r = packed_device_run(&b->pv, b->src, b->copy, &b->elem, &popped)) != OK) return r;
    // Linux virtqueue_get_buf_ctx_packed() until the next slot is not used.
    for (;;) {
      uint16_t pos = d->last_used_idx;
      uint16_t flags = __atomic_load_n(&d->desc[pos].flags, __ATOMIC_ACQUIRE);
      if (!packed_desc_used(flags, d->used_wrap_counter)) break;
      uint32_t id = d->desc[pos].id, len = d->desc[pos].len;
      if (id >= QSZ) return E_USED_ID_INVALID;
      uint32_t token = d->token[id];
      if (token == 0) return E_USED_ID_INVALID;
      uint32_t p = pos + d->state_num[id];  // update_last_used_idx_packed()
      if (p >= QSZ) {
        p -= QSZ;
        d->used_wrap_counter = !d->used_wrap_counter;
      }
      d->last_used_idx = (uint16_t)p;
      d->num_free = (uint16_t)(d->num_free + d->state_num[id]);  // detach_buf_packed()
      d->token[id] = 0;
      d->free_ids[d->free_top++] = (uint16_t)id;
      reclaimed++;
      if ((r = complete(b, token, len, verify)) != OK) return r;
    }
  }
  if (popped != batch || reclaimed != batch) return E_VERIFY;
  return OK;
}

// After a run every request is back: no slot pending, every descriptor and id free, no token left.
static int bench_check_idle(struct bench *b) {
  for (uint32_t s = 0; s < QSZ; s++)
    if (b->pending[s]) return E_VERIFY;
  if (!b->packed) {
    struct split_driver *d = &b->sd;
    if (d->num_free != QSZ) return E_VERIFY;
    uint8_t seen[QSZ] = {0};
    uint16_t i = d->free_head;
    for (uint32_t k = 0; k < QSZ; k++) {  // the free list reaches all 256 descriptors exactly once
      if (i >= QSZ || seen[i]) return E_VERIFY;
      seen[i] = 1;
      if (d->token[i]) return E_VERIFY;
      i = d->desc[i].next;
    }
    if (b->sv.last_avail_idx != d->avail_idx_shadow || d->last_used_idx != b->sv.used_idx_shadow)
      return E_VERIFY;
  } else {
    struct packed_driver *d = &b->pd;
    if (d->num_free != QSZ || d->free_top != QSZ) return E_VERIFY;
    uint8_t seen[QSZ] = {0};
    for (uint32_t k = 0; k < QSZ; k++) {
      uint16_t id = d->free_ids[k];
      if (id >= QSZ || seen[id] || d->token[id]) return E_VERIFY;
      seen[id] = 1;
    }
    if (b->pv.next_avail != d->next_avail_idx || b->pv.avail_wrap != d->avail_wrap_counter ||
        b->pv.next_used != d->last_used_idx || b->pv.used_wrap != d->used_wrap_counter)
      return E_VERIFY;
  }
  return OK;
}

// ---------------------------------------------------------------------------------------------------------
// Self-test of the error paths the timed loop never takes.

static void expect(bool ok, const char *what) {
  if (!ok) {
    fprintf(stderr, "ring_baseline: selftest failed: %s\n", what);
    exit(1);
  }
}

static void expect_err(int got, int want, const char *what) {
  if (got != want) {
    fprintf(stderr, "ring_baseline: selftest failed: %s: got %s, want %s\n", what, err_name(got),
            err_name(want));
    exit(1);
  }
}

static void selftest(uint8_t *mem, uint8_t *src) {
  static struct bench b;
  bench_init(&b, false, 1, 3, 64, mem, src);
  struct seg s[MAX_SEGS];
  uint32_t n = 0;
  // Crossing entries 4 -> 5 -> 6 yields three segments, each contiguous in host memory here.
  uint64_t iova = IOVA_BASE + 5ull * TLB_ENTRY_SIZE - 100;
  expect(translate(&b.tlb, iova, TLB_ENTRY_SIZE + 200, PERM_WRITE, s, &n, MAX_SEGS) == OK && n == 3,
         "cross: segs");
  expect(s[0].len == 100 && s[1].len == TLB_ENTRY_SIZE && s[2].len == 100, "cross: lens");
  expect(s[0].ptr == gpa(&b, iova) && s[1].ptr == gpa(&b, iova + 100), "cross: ptrs");
  n = 0;
  expect(translate(&b.tlb, IOVA_BASE - 1, 2, PERM_READ, s, &n, MAX_SEGS) == E_IOTLB_MISS, "miss below");
  n = 0;
  expect_err(translate(&b.tlb, IOVA_BASE + MEM_SIZE - 1, 2, PERM_READ, s, &n, MAX_SEGS), E_IOTLB_MISS,
             "miss past end");
  n = 0;
  expect(translate(&b.tlb, UINT64_MAX - 1, 3, PERM_READ, s, &n, MAX_SEGS) == E_ADDR_OVERFLOW, "overflow");
  b.tlb.perm[7] = PERM_READ;
  n = 0;
  expect_err(translate(&b.tlb, IOVA_BASE + 7ull * TLB_ENTRY_SIZE, 8, PERM_WRITE, s, &n, MAX_SEGS), E_IOTLB_PERM,
             "perm");
  b.tlb.perm[7] = PERM_RW;
  n = MAX_SEGS;
  expect(translate(&b.tlb, IOVA_BASE, 8, PERM_READ, s, &n, MAX_SEGS) == E_TOO_MANY_SEGS, "seg limit");

  // Split chain errors, injected straight into the rings.
  struct split_driver *d = &b.sd;
  struct split_device *v = &b.sv;
  uint32_t popped;
#define SPLIT_CASE(setup, want, what)                                                   \
  do {                                                                                  \
    bench_init(&b, false, 1, 3, 64, mem, src);                                          \
    expect(split_add(d, b.sgs[0], 1, 2, 1) == OK, "add");                               \
    setup;                                                                              \
    __atomic_store_n(d->avail_idx, d->avail_idx_shadow, __ATOMIC_SEQ_CST);              \
    expect_err(split_device_run(v, src, 64, &b.elem, &popped), (want), what);           \
  } while (0)
  SPLIT_CASE((void)0, OK, "split ok");
  // 1 -> 2 -> 1 -> ...; zero lengths so the loop check fires before the segment limit.
  SPLIT_CASE(d->desc[2].flags |= VRING_DESC_F_NEXT; d->desc[2].next = 1; d->desc[1].len = d->desc[2].len = 0,
             E_DESC_LOOP, "split loop");
  SPLIT_CASE(d->desc[0].next = QSZ, E_DESC_OUT_OF_RANGE, "split next range");
  SPLIT_CASE(d->avail_ring[0] = QSZ, E_DESC_OUT_OF_RANGE, "split head range");
  SPLIT_CASE(d->desc[1].flags |= VRING_DESC_F_INDIRECT, E_INDIRECT, "split indirect");
  SPLIT_CASE(d->desc[2].flags &= (uint16_t)~VRING_DESC_F_WRITE, E_WRITE_BEFORE_READ, "split w-before-r");
  SPLIT_CASE(d->desc[2].len = UINT32_MAX, E_LEN_OVERFLOW, "split len overflow");
  SPLIT_CASE(d->desc[1].addr = 0x1000, E_IOTLB_MISS, "split miss");
  SPLIT_CASE(d->avail_idx_shadow = (uint16_t)(d->avail_idx_shadow + QSZ), E_AVAIL_IDX_JUMP,
             "split avail jump");
  SPLIT_CASE(d->desc[1].len = 4, E_COPY_TOO_BIG, "split copy too big");
#undef SPLIT_CASE

  // Packed chain errors.
  struct packed_driver *pd = &b.pd;
  struct packed_device *pv = &b.pv;
#define PACKED_CASE(setup, want, what)                                                  \
  do {                                                                                  \
    bench_init(&b, true, 1, 3, 64, mem, src);                                           \
    expect(packed_add(pd, b.sgs[0], 1, 2, 1) == OK, "add");                             \
    setup;                                                                              \
    expect_err(packed_device_run(pv, src, 64, &b.elem, &popped), (want), what);         \
  } while (0)
  PACKED_CASE((void)0, OK, "packed ok");
  PACKED_CASE(pd->desc[1].flags |= VRING_DESC_F_INDIRECT, E_INDIRECT, "packed indirect");
  PACKED_CASE(pd->desc[2].flags &= (uint16_t)~VRING_DESC_F_WRITE, E_WRITE_BEFORE_READ, "packed w-before-r");
  PACKED_CASE(pd->desc[2].len = UINT32_MAX, E_LEN_OVERFLOW, "packed len overflow");
  PACKED_CASE(pd->desc[2].addr = IOVA_BASE + MEM_SIZE, E_IOTLB_MISS, "packed miss");
  // A chain whose NEXT never ends covers the whole ring and then some.
  PACKED_CASE(for (uint32_t i = 0; i < QSZ; i++) {
                pd->desc[i].flags = VRING_PACKED_DESC_F_AVAIL | VRING_DESC_F_NEXT | VRING_DESC_F_WRITE;
                pd->desc[i].len = 0;
              },
              E_DESC_LOOP, "packed loop");
#undef PACKED_CASE

  // Driver-side checks on what the device returns.
  bench_init(&b, false, 1, 1, 0, mem, src);
  expect_err(bench_iter(&b, true), OK, "split iter");
  v->used_ring[v->used_idx_shadow & (QSZ - 1)] = (struct vring_used_elem){QSZ, 0};
  v->used_idx_shadow++;
  split_publish_notify(v);
  expect_err(bench_iter(&b, true), E_USED_ID_INVALID, "split used id range");
  bench_init(&b, false, 1, 1, 0, mem, src);
  v->used_ring[0] = (struct vring_used_elem){5, 0};  // id 5 is not a head in flight
  v->used_idx_shadow++;
  split_publish_notify(v);
  expect_err(bench_iter(&b, true), E_USED_ID_INVALID, "split used id not in flight");

  // Packed: a used descriptor (both bits = used wrap counter 1) carrying an id that is not in flight.
  bench_init(&b, true, 1, 1, 0, mem, src);
  expect_err(bench_iter(&b, true), OK, "packed iter");
  pd->desc[2] = (struct vring_packed_desc){0, 0, 7, VRING_PACKED_DESC_F_AVAIL | VRING_PACKED_DESC_F_USED};
  expect_err(bench_iter(&b, true), E_USED_ID_INVALID, "packed used id not in flight");

  // need_event arithmetic (virtio 1.x 2.7.10 example values).
  expect(vring_need_event(5, 6, 5) && !vring_need_event(6, 6, 5) && vring_need_event(0xffff, 1, 0xfffe),
         "need_event");
}

// ---------------------------------------------------------------------------------------------------------
// Timing

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static const char *const FORMATS[] = {"split", "packed"};
static const uint32_t BATCHES[] = {1, 32};
static const uint32_t CHAINS[] = {1, 3};
static const uint32_t COPIES[] = {0, 64, 1500};
#define NCASES 24

static void case_name(char *buf, size_t size, int idx) {
  int f = idx / 12, bb = (idx / 6) % 2, c = (idx / 3) % 2, cp = idx % 3;
  snprintf(buf, size, "%s/b%" PRIu32 "/c%" PRIu32 "/copy%" PRIu32, FORMATS[f], BATCHES[bb], CHAINS[c],
           COPIES[cp]);
}

// Runs iterations in chunks of about 4096 requests, reading the clock between chunks, until `seconds`
// have passed. Returns requests completed and the elapsed time.
static uint64_t run_for(struct bench *b, double seconds, bool verify, double *elapsed) {
  uint32_t chunk = 4096 / b->batch;
  uint64_t reqs = 0;
  double t0 = now_s(), t;
  do {
    for (uint32_t i = 0; i < chunk; i++) {
      int r = bench_iter(b, verify);
      if (r != OK) die("round trip", r);
    }
    reqs += (uint64_t)chunk * b->batch;
    t = now_s();
  } while (t - t0 < seconds);
  *elapsed = t - t0;
  return reqs;
}

static void usage(void) {
  fprintf(stderr, "usage: ring_baseline [--seconds S] [--case NAME]... [--list]\n");
  exit(2);
}

int main(int argc, char **argv) {
  const uint16_t probe = 1;
  if (*(const uint8_t *)&probe != 1) {
    fprintf(stderr, "ring_baseline: needs a little-endian host\n");
    return 1;
  }
  double seconds = 0.25;
  bool selected[NCASES] = {false};
  bool any = false;
  char name[64];
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--seconds") && i + 1 < argc) {
      char *end;
      seconds = strtod(argv[++i], &end);
      if (*end || !(seconds > 0) || seconds > 3600) usage();
    } else if (!strcmp(argv[i], "--case") && i + 1 < argc) {
      const char *want = argv[++i];
      int found = -1;
      for (int k = 0; k < NCASES; k++) {
        case_name(name, sizeof name, k);
        if (!strcmp(name, want)) found = k;
      }
      if (found < 0) {
        fprintf(stderr, "ring_baseline: unknown case %s\n", want);
        return 2;
      }
      selected[found] = any = true;
    } else if (!strcmp(argv[i], "--list")) {
      for (int k = 0; k < NCASES; k++) {
        case_name(name, sizeof name, k);
        puts(name);
      }
      return 0;
    } else {
      usage();
    }
  }

  uint8_t *mem = aligned_alloc(4096, MEM_SIZE);
  uint8_t *src = malloc(SRC_LEN);
  static struct bench b;
  if (!mem || !src) {
    fprintf(stderr, "ring_baseline: out of memory\n");
    return 1;
  }
  for (uint32_t i = 0; i < SRC_LEN; i++) src[i] = (uint8_t)(i * 7 + 1);
  selftest(mem, src);

  uint64_t checksum = 0;
  for (int k = 0; k < NCASES; k++) {
    if (any && !selected[k]) continue;
    case_name(name, sizeof name, k);
    bench_init(&b, k >= 12, BATCHES[(k / 6) % 2], CHAINS[(k / 3) % 2], COPIES[k % 3], mem, src);
    double warm = seconds * 0.2 < 0.02 ? 0.02 : seconds * 0.2, elapsed;
    // Warm-up with byte verification (many ring wraps, so every slot and both wrap states are checked).
    run_for(&b, warm, true, &elapsed);
    uint64_t done0 = b.completed, kicks0 = b.sd.kicks + b.pd.kicks, notif0 = b.sv.notifies + b.pv.notifies;
    // Timed run: full ring work and token/len checks, no byte sampling.
    uint64_t reqs = run_for(&b, seconds, false, &elapsed);
    uint64_t kicks = b.sd.kicks + b.pd.kicks - kicks0, notifies = b.sv.notifies + b.pv.notifies - notif0;
    if (b.completed - done0 != reqs) die(name, E_VERIFY);
    // Verified tail: 1024 more round trips with byte checks, then every token, id and descriptor is home.
    for (int i = 0; i < 1024; i++) {
      int r = bench_iter(&b, true);
      if (r != OK) die(name, r);
    }
    int r = bench_check_idle(&b);
    if (r != OK) die(name, r);
    checksum += b.completed + b.bytes_seen + kicks + notifies;
    printf("{\"case\":\"%s\",\"mreqs\":%.3f}\n", name, (double)reqs / elapsed / 1e6);
    fflush(stdout);
    fprintf(stderr, "# %s reqs=%" PRIu64 " s=%.3f kicks=%" PRIu64 " notifies=%" PRIu64 " bytes=%" PRIu64 "\n",
            name, reqs, elapsed, kicks, notifies, b.bytes_seen);
  }
  fprintf(stderr, "# checksum %" PRIu64 "\n", checksum);
  free(mem);
  free(src);
  return 0;
}
