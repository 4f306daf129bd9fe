// Test traffic for the simulated pods, run inside their network namespaces as a real process.
//   node traffic.mjs serve <tcpPort> <udpPort> <replyBytes>
//   node traffic.mjs tcp <host> <port> <sendBytes>        (waits for the reply, then closes)
//   node traffic.mjs udp <host> <port> <count> <size> [gapMs]  (one reply datagram per datagram)
//   node traffic.mjs tcp-slow <host> <port> <chunks> <chunkBytes> <gapMs>  (a conversation that lasts)
import { createServer, connect } from 'node:net';
import { createSocket } from 'node:dgram';

const [mode, ...args] = process.argv.slice(2);

if (mode === 'serve') {
  const [tcpPort, udpPort, replyBytes] = args.map(Number);
  // Separate IPv4 and IPv6 sockets: a dual-stack socket would see IPv4 peers as ::ffff:a.b.c.d.
  let listening = 0;
  const ready = () => {
    if (++listening === 4) process.stdout.write('serving\n');
  };
  for (const host of ['0.0.0.0', '::']) {
    createServer((socket) => {
      socket.on('data', () => undefined);
      socket.on('end', () => socket.end(Buffer.alloc(replyBytes, 0x61)));
      socket.on('error', () => undefined);
    }).listen({ port: tcpPort, host, ipv6Only: host === '::' }, ready);
  }
  for (const type of ['udp4', 'udp6']) {
    const udp = createSocket({ type, ipv6Only: type === 'udp6' });
    udp.on('message', (msg, rinfo) => udp.send(msg.subarray(0, Math.min(msg.length, 64)), rinfo.port, rinfo.address));
    udp.bind(udpPort, type === 'udp4' ? '0.0.0.0' : '::', ready);
  }
} else if (mode === 'tcp') {
  const [host, port, sendBytes] = [args[0], Number(args[1]), Number(args[2])];
  const socket = connect({ host, port }, () => {
    process.stdout.write(`local ${socket.localPort}\n`);
    socket.end(Buffer.alloc(sendBytes, 0x62));
  });
  let reply = 0;
  socket.on('data', (d) => {
    reply += d.length;
  });
  socket.on('close', () => {
    process.stdout.write(`tcp done ${reply}\n`);
    process.exit(0);
  });
  socket.on('error', (e) => {
    process.stderr.write(`tcp error ${e.message}\n`);
    process.exit(1);
  });
} else if (mode === 'tcp-slow') {
  const [host, port, chunks, chunkBytes, gapMs] = [args[0], Number(args[1]), Number(args[2]), Number(args[3]), Number(args[4])];
  let sent = 0;
  const socket = connect({ host, port }, () => {
    process.stdout.write(`local ${socket.localPort}\n`);
    const tick = setInterval(() => {
      socket.write(Buffer.alloc(chunkBytes, 0x64));
      if (++sent === chunks) {
        clearInterval(tick);
        socket.end();
      }
    }, gapMs);
  });
  socket.on('data', () => undefined);
  socket.on('close', () => {
    process.stdout.write('tcp done\n');
    process.exit(0);
  });
  socket.on('error', (e) => {
    process.stderr.write(`tcp error ${e.message}\n`);
    process.exit(1);
  });
} else if (mode === 'udp') {
  const [host, port, count, size] = [args[0], Number(args[1]), Number(args[2]), Number(args[3])];
  const gapMs = Number(args[4] ?? 5);
  const udp = createSocket(host.includes(':') ? 'udp6' : 'udp4');
  let replies = 0;
  udp.on('message', () => {
    replies++;
    if (replies === count) {
      process.stdout.write(`udp done ${replies}\n`);
      udp.close();
      process.exit(0);
    }
  });
  let sent = 0;
  udp.bind(0, () => process.stdout.write(`local ${udp.address().port}\n`));
  const tick = setInterval(() => {
    udp.send(Buffer.alloc(size, 0x63), port, host);
    if (++sent === count) clearInterval(tick);
  }, gapMs);
  setTimeout(() => {
    process.stdout.write(`udp done ${replies}\n`);
    process.exit(0);
  }, 5000 + count * gapMs * 2);
} else {
  process.stderr.write('usage: traffic.mjs serve|tcp|udp ...\n');
  process.exit(2);
}
