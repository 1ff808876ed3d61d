// Types of the circadia stream client (src/index.js).

export type CloseReason =
  | "going_away" | "try_again_later" | "auth" | "forbidden" | "slow" | "erased" | "replaced" | "abnormal" | "closed";

export declare const CLOSE_REASONS: Readonly<Record<number, CloseReason>>;
export declare const FINAL_REASONS: ReadonlySet<CloseReason>;
export declare function closeReason(code: number): CloseReason;
export declare function reconnectDelay(attempt: number, backoff: { initialMs: number; maxMs: number },
                                       hintMs?: number, random?: () => number): number;

export interface Cursor { partition: number; offset: number }

export interface PredictionDetail {
  /** The io.circadia.prediction.Prediction record as JSON (schemas/prediction/prediction.avsc). */
  prediction: Record<string, unknown>;
  cursor: Cursor;
  epoch: string | null;
}

export interface StateDetail {
  state: "connecting" | "live" | "waiting" | "closed";
  reason?: CloseReason;
  code?: number;
  message?: string;
  retryInMs?: number;
  userId?: string;
  expiresAt?: number;
}

export interface ConnectOptions {
  url: string;
  /** Called for the first auth, after every reconnect, and when the server asks for a refresh. */
  getToken: () => string | Promise<string>;
  /** A WebSocket constructor; default globalThis.WebSocket. */
  WebSocket?: unknown;
  backoff?: { initialMs: number; maxMs: number };
  random?: () => number;
}

export declare class StreamClient extends EventTarget {
  constructor(options: ConnectOptions);
  readonly url: string;
  cursor: Cursor | null;
  epoch: string | null;
  state: StateDetail["state"];
  userId: string | null;
  close(): void;
  addEventListener(type: "prediction", listener: (event: CustomEvent<PredictionDetail>) => void): void;
  addEventListener(type: "reset", listener: (event: CustomEvent<{ reason: string }>) => void): void;
  addEventListener(type: "state", listener: (event: CustomEvent<StateDetail>) => void): void;
  addEventListener(type: "error", listener: (event: CustomEvent<{ reason: string; error?: unknown }>) => void): void;
}

export declare function connect(options: ConnectOptions): StreamClient;
