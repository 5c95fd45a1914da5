import { describe, expect, test } from "bun:test";
import { OPTIONAL_MODULES, uninstalledModuleVariables } from "../../src/main/_main.ts";
import * as modules from "../../src/main/modules.ts";

describe("a variable of an optional module that is not installed", () => {
  const env = {
    WEBSUB_TOPIC: "http://127.0.0.1:9/x",
    WEBSUB_SECRET: "hunter2-secret-value",
    WEBSUB_HUB: " ",
    PORT: "0",
    WEBSUBX: "not the prefix",
  };

  test("is refused, one line each, naming the variable, the module and what to do, never the value", () => {
    const problems = uninstalledModuleVariables(env, []);
    expect(problems).toEqual([
      "WEBSUB_SECRET is set but the WebSub module is not installed (src/main/modules.ts): unset it or restore the module",
      "WEBSUB_TOPIC is set but the WebSub module is not installed (src/main/modules.ts): unset it or restore the module",
    ]);
    expect(problems.join("\n")).not.toContain("hunter2");
    expect(problems.join("\n")).not.toContain("127.0.0.1");
  });

  test("is accepted while the module is installed", () => {
    expect(uninstalledModuleVariables(env, ["websub"])).toEqual([]);
  });

  test("nothing is refused when none is set, empty counting as unset", () => {
    expect(uninstalledModuleVariables({ PORT: "0", WEBSUB_TOPIC: "" }, [])).toEqual([]);
  });

  test("every optional module the template ships is known, so its removal is noticed", () => {
    // A module in ./modules.ts without an entry would be silently ignored once removed.
    for (const name of Object.keys(modules)) expect(Object.keys(OPTIONAL_MODULES)).toContain(name);
  });
});
