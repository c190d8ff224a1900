// React hook over the hub client: live progress of one job.
//
//   const { jobStatus, progress, status, error, job } = useJobSSE({ jobId, type, token });
//
// `type` is any job type the hub runs (see jobTypes() in hub-client.js).
//
// `jobStatus` is the job's status ('queued', 'active', 'retrying',
// 'completed', 'failed'), `progress` 0..100, `status` the connection state
// ('idle', 'connecting', 'open', 'reconnecting', 'closed'), `error` a fatal
// error (bad token, unknown job), `job` the latest event (with `result`).
// The subscription closes when the component unmounts or the job changes.
// In a browser, every hook of the page (and of the user's other tabs) shares
// one connection; `share: false` gives a hook one of its own.

import { useEffect, useRef, useState } from 'react';
import { subscribeJob } from './hub-client.js';

const IDLE = { jobStatus: null, progress: 0, status: 'idle', error: null, job: null };

export function useJobSSE({ jobId, type, token, getToken, baseUrl = '', transport = 'auto', auth, share, onComplete }) {
  const [state, setState] = useState(IDLE);
  // The latest callbacks, without resubscribing when they change identity.
  const callbacks = useRef({ onComplete, getToken });
  callbacks.current = { onComplete, getToken };

  useEffect(() => {
    if (!jobId) {
      setState(IDLE);
      return undefined;
    }
    setState({ ...IDLE, status: 'connecting' });
    let subscription;
    try {
      subscription = subscribeJob({
        baseUrl,
        type,
        jobId,
        token,
        transport,
        auth,
        share,
        getToken: callbacks.current.getToken ? () => callbacks.current.getToken() : undefined,
        onEvent: (event) => {
          if (event.status) {
            setState((s) => ({ ...s, jobStatus: event.status, progress: event.progress ?? s.progress, job: event }));
          }
        },
        onComplete: (event) => callbacks.current.onComplete?.(event),
        onState: ({ state: connection }) => setState((s) => ({ ...s, status: connection })),
        onError: (error) => setState((s) => ({ ...s, error, status: 'closed' })),
      });
    } catch (error) {
      // A bad type or job id: shown like any fatal error, not thrown at render.
      setState({ ...IDLE, error, status: 'closed' });
      return undefined;
    }
    return () => subscription.close();
  }, [jobId, type, token, baseUrl, transport, auth, share]);

  return state;
}
