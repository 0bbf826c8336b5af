// ESM entry: the CommonJS shell, re-exported.
import shell from './index.js';
export const { startEmulator } = shell;
