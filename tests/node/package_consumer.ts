// An app that installed the client from npm, type-checked against the
// package's declarations (`tsc --noEmit --strict`): both entries, the options
// a page uses, and what the hook returns. Each @ts-expect-error is a mistake
// the declarations must catch; if they stopped catching it, tsc fails.
import {
  HttpError,
  hubClient,
  isTerminal,
  subscribeJob,
  subscribeMyJobs,
  TERMINAL_STATUSES,
  type HubEvent,
  type Job,
  type JobStatus,
  type JobTypeInfo,
  type Subscription,
} from '@realtime-hub/client';
import { useJobSSE, type JobSSEState, type UseJobSSEOptions } from '@realtime-hub/client/react';

const hub = hubClient({ baseUrl: 'https://hub.example.com', getToken: async () => 'a token' });

export async function startAndFollow(render: (progress: number, step?: string) => void): Promise<HubEvent> {
  const types: JobTypeInfo[] = await hub.jobTypes();
  const runnable = types.filter((t) => t.runner === 'actor');
  const created = await hub.createJob(runnable[0].type, { name: 'Ada' });
  return new Promise((resolve, reject) => {
    const subscription: Subscription = subscribeJob(created.type, created.jobId, {
      share: false,
      onProgress: (progress, event) => render(progress, event.step),
      onComplete: resolve,
      onError: (error) => reject(error instanceof HttpError ? new Error(`${error.status}`) : error),
    });
    setTimeout(() => subscription.close(), 60_000);
  });
}

export function followAll(onJob: (jobId: string, status: JobStatus | undefined) => void): Subscription {
  return hub.subscribeMyJobs({
    share: 'auto',
    onEvent: (event, id: string | null) => event.jobId && id !== null && onJob(event.jobId, event.status),
  });
}

export async function history(): Promise<Job[]> {
  const first = await hub.listJobs({ limit: 20 });
  const older = first.next ? await hub.listJobs({ limit: 20, before: first.next }) : { jobs: [], next: null };
  return [...first.jobs, ...older.jobs].filter((job) => TERMINAL_STATUSES.includes(job.status as 'completed'));
}

export const standalone: Subscription = subscribeMyJobs({ baseUrl: '', token: 'a token', share: true });

// @ts-expect-error: share is true, false or 'auto'
subscribeMyJobs({ token: 'a token', share: 'always' });

/** What a component renders from the hook (its types need no React). */
export function progressText(jobId: string | null, onDone: (ok: boolean) => void): string {
  const options: UseJobSSEOptions = {
    jobId,
    type: 'report',
    token: 'a token',
    onComplete: (event: HubEvent) => onDone(isTerminal(event.status) && event.status === 'completed'),
  };
  const state: JobSSEState = useJobSSE(options);
  const jobStatus: JobStatus | null = state.jobStatus;
  const progress: number = state.progress;
  const connection: 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed' = state.status;
  const problem: string | undefined = state.error?.message;
  const result: unknown = state.job?.result;
  return `${jobStatus ?? 'waiting'} ${progress}% (${connection}) ${problem ?? ''} ${result ? 'with a result' : ''}`;
}

// @ts-expect-error: jobStatus is a status or null, never a number
export const wrongStatus: number = useJobSSE({ jobId: 'j', type: 'report' }).jobStatus;
// @ts-expect-error: the connection state has no 'done'
export const wrongConnection: JobSSEState['status'] = 'done';
// @ts-expect-error: type is required
useJobSSE({ jobId: 'j' });
// @ts-expect-error: the hook takes no such option
useJobSSE({ jobId: 'j', type: 'report', onProgress: () => undefined });
