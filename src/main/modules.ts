// The optional modules the entry points mount. To remove one, delete its folder and its line here.
export { websub } from "../websub/mod.ts";
// Keeps this file a module once the list is empty.
export {};
