// The optional modules the entry points mount. To remove one, delete its folder and its line here;
// its variables are then refused at startup if set (OPTIONAL_MODULES in ./_main.ts).
export { websub } from "../websub/mod.ts";
// Keeps this file a module once the list is empty.
export {};
