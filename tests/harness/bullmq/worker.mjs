// A plain BullMQ worker, as an application runs it: one Worker per queue named on the command
// line, concurrency 1 (jobs are processed in queue order), printing one JSON line per processed
// job to stdout. Reads BULLMQ_URL, BULLMQ_PREFIX and BULLMQ_NODE_MODULES (where
// `scripts/services.sh bullmq` installed the pinned `bullmq` package). Exits when stdin closes.
import { createRequire } from 'node:module';

const require = createRequire(`${process.env.BULLMQ_NODE_MODULES}/`);
const { Worker } = require('bullmq');

const url = new URL(process.env.BULLMQ_URL);
const connection = {
  host: url.hostname,
  port: Number(url.port || 6379),
  maxRetriesPerRequest: null,
};
const prefix = process.env.BULLMQ_PREFIX || 'bull';

const workers = process.argv.slice(2).map((queue) => {
  const worker = new Worker(
    queue,
    async (job) => {
      process.stdout.write(
        `${JSON.stringify({
          queue,
          id: job.id,
          name: job.name,
          data: job.data,
          opts: job.opts,
          attemptsMade: job.attemptsMade,
        })}\n`,
      );
    },
    { connection, prefix, concurrency: 1 },
  );
  worker.on('error', (error) => process.stderr.write(`worker ${queue}: ${error}\n`));
  return worker;
});

await Promise.all(workers.map((worker) => worker.waitUntilReady()));
process.stdout.write(`${JSON.stringify({ ready: true })}\n`);

process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
