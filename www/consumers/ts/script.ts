// The <script> build's global as a page written in TypeScript sees it (types only: the page
// loads script/b24-offline.js with a <script> tag).
import type {} from 'b24-offline/script';

export async function fromScriptTag(): Promise<string> {
  await B24Offline.ready;
  const b24 = await B24Offline.Bitrix24.fromFrame();
  const error: unknown = null;
  if (error instanceof B24Offline.B24Error) return error.code;
  // The wasm is loaded by the script itself: no init functions on the global.
  // @ts-expect-error initSync is not part of the global
  B24Offline.initSync;
  return b24.domain;
}
