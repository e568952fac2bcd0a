// `npm start` until the daemon lands: a datapath self-demo, then the vDPA demo (scripts/demo-vdpa.ts).
// A driver side and a device side exchange
// a million requests through one virtqueue of each format, every buffer translated through an IOTLB,
// 64 bytes written back per request, and the rate printed.

import { SharedMemoryRegion } from "../src/memory/index.js";
import { BufferList, Chain, createLoopback, type RingFormat } from "../src/ring/index.js";
import { vdpaDemo } from "./demo-vdpa.js";

const REQUESTS = 1_000_000;
const BATCH = 32;
const QUEUE = 256;

function run(format: RingFormat): void {
  const lb = createLoopback<number>({
    format,
    num: QUEUE,
    eventIdx: true,
    iotlbEntries: 64,
    poolSize: 16 << 20,
  });
  const { driver, device, pool } = lb;
  const lists = Array.from({ length: BATCH }, () => {
    const list = new BufferList(2);
    list.out(pool.alloc(16, 16).iova, 16);
    list.in(pool.alloc(2048, 64).iova, 2048);
    return list;
  });
  const payload = new SharedMemoryRegion(64, "device-payload");
  payload.bytes.fill(0x42);
  const chain = new Chain();
  let kicks = 0;
  let notifies = 0;
  let done = 0;
  let bytes = 0;
  const start = process.hrtime.bigint();
  while (done < REQUESTS) {
    for (let k = 0; k < BATCH; k++) driver.add(lists[k], k);
    if (driver.publishAvail()) kicks++;
    while (device.pop(chain)) device.push(chain, chain.writable.copyFromRegion(payload, 0, payload.size));
    if (device.publishUsed()) notifies++;
    while (driver.getUsed() !== undefined) {
      done++;
      bytes += driver.usedLen;
    }
  }
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  if (bytes !== done * payload.size) throw new Error(`${format}: lost bytes`);
  console.log(
    `${format.padEnd(6)} queue ${QUEUE}, batch ${BATCH}: ${done} requests in ${seconds.toFixed(3)} s = ` +
      `${(done / seconds / 1e6).toFixed(2)} Mreq/s (${kicks} kicks, ${notifies} notifications, ` +
      `${(bytes / 2 ** 20).toFixed(1)} MiB written through ${lb.iotlb.size} IOTLB entries)`,
  );
}

console.log("vdpa-ts datapath self-demo: driver and device sides of one virtqueue, in one process");
for (const format of ["split", "packed"] as RingFormat[]) run(format);
console.log("every request came back once with the 64 bytes the device wrote");
console.log("");
console.log("vdpa-ts vDPA demo: simulators on the vDPA bus, driven by the virtio-net and virtio-blk drivers");
await vdpaDemo();
