/** Where {@link startEmulator} listens. */
export interface EmulatorOptions {
  /** The address of the main portal (default `127.0.0.1`); extra portals always use `127.0.0.1`. */
  readonly host?: string;
  /** Its port; 0 (the default) takes a free one. */
  readonly port?: number;
}

/** A running emulator: one Bitrix24 portal, plus those made through `POST /_emulator/portals`. */
export interface RunningEmulator {
  /** `http://127.0.0.1:PORT`: REST at `${url}/rest/`, the control API at `${url}/_emulator/`. */
  readonly url: string;
  /** The central OAuth server of every portal of this emulator (the main portal's origin, the
   *  same as `url`): cloud portals name `${oauthServer}/rest/` as their `server_endpoint`, and
   *  `${oauthServer}/oauth/token/` refreshes any portal's tokens. */
  readonly oauthServer: string;
  /** The port the main portal listens on. */
  readonly port: number;
  /** Closes every portal's listener and connection; resolves once all are closed. Calling it
   *  again returns the same promise. */
  stop(): Promise<void>;
}

/** Starts the portal emulator in this process (its logic is the Rust emulator's, compiled to
 *  WebAssembly) and resolves once it listens. Stop it with `stop()`, e.g. in an `after` hook. */
export declare function startEmulator(options?: EmulatorOptions): Promise<RunningEmulator>;
