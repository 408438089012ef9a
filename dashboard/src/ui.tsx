// Pieces every page uses: how an error is shown (code, message, retryable, request id), loading, times, and a
// confirmation dialog.
import type { ComponentChildren } from "preact";
import { useEffect, useRef } from "preact/hooks";
import { ApiError } from "./api";

export function ErrorBox({ error, onRetry }: { error: unknown; onRetry?: () => void }) {
  if (!error) return null;
  const e = error instanceof ApiError ? error : null;
  return (
    <div class="error" role="alert">
      <strong>{e ? e.message : String((error as Error).message ?? error)}</strong>
      {e && (
        <dl class="error-facts">
          <dt>code</dt>
          <dd>
            <code>{e.code}</code>
          </dd>
          <dt>retryable</dt>
          <dd>{e.retryable ? "yes" : "no"}</dd>
          {e.requestId && (
            <>
              <dt>request id</dt>
              <dd>
                <code>{e.requestId}</code>
              </dd>
            </>
          )}
        </dl>
      )}
      {onRetry && e?.retryable && (
        <button type="button" class="secondary" onClick={onRetry}>
          Try again
        </button>
      )}
    </div>
  );
}

export function Loading({ what }: { what: string }) {
  return (
    <p class="muted" role="status">
      Loading {what}…
    </p>
  );
}

export function time(ms: number | null | undefined): string {
  if (ms == null) return "—";
  return new Date(ms).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" });
}

export function ago(ms: number): string {
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

/** A modal dialog asking to confirm `action`; Escape or Cancel closes it. */
export function Confirm({ title, children, action, onConfirm, onCancel }: { title: string; children: ComponentChildren; action: string; onConfirm: () => void; onCancel: () => void }) {
  const dialog = useRef<HTMLDialogElement>(null);
  useEffect(() => {
    dialog.current?.showModal();
  }, []);
  return (
    <dialog ref={dialog} aria-labelledby="confirm-title" onCancel={onCancel} onClose={onCancel}>
      <h2 id="confirm-title">{title}</h2>
      <div>{children}</div>
      <div class="actions">
        <button type="button" class="secondary" onClick={onCancel}>
          Cancel
        </button>
        <button type="button" onClick={onConfirm} autoFocus>
          {action}
        </button>
      </div>
    </dialog>
  );
}

/** A list table: its column headings, then a last column of row actions (named for screen readers only). */
export function ListTable({ columns, children }: { columns: string[]; children: ComponentChildren }) {
  return (
    <table class="list">
      <thead>
        <tr>
          {columns.map((c) => (
            <th scope="col" key={c}>
              {c}
            </th>
          ))}
          <th scope="col">
            <span class="visually-hidden">Actions</span>
          </th>
        </tr>
      </thead>
      <tbody>{children}</tbody>
    </table>
  );
}

export function StatusBadge({ status }: { status: string }) {
  return <span class={`badge badge-${status}`}>{status}</span>;
}
