"""Drives memos with the official MemOS Python SDK (MemOSClient), unchanged.

Run by tests/tests/sdk.rs with MEMOS_BASE_URL (…/api/openmem/v1) and MEMOS_API_KEY set; exits
non-zero on the first mismatch and prints one `ok <step>` line per checked call.
"""

import json
import os
import time

from memos.api.client import MemOSClient


def ok(step):
    print(f"ok {step}", flush=True)


c = MemOSClient(api_key=os.environ["MEMOS_API_KEY"], base_url=os.environ["MEMOS_BASE_URL"])
user, conv = "sdk-user", "sdk-conv"

r = c.add_message(
    [{"role": "user", "content": "I like strawberry"}, {"role": "assistant", "content": "Noted!"}],
    user_id=user, conversation_id=conv, async_mode=False, tags=["food"], info={"via": "sdk"},
)
assert r.success and r.status == "completed", r
ok("add_message sync")

r = c.add_message(
    [{"role": "user", "content": "My sister Ana lives in Lisbon."}], user_id=user, conversation_id=conv
)
assert r.success and r.task_id, r
task = r.task_id
for _ in range(200):
    s = c.get_task_status(task)
    status = s.data[0].status if isinstance(s.data, list) else s.data.status
    if status == "completed":
        break
    time.sleep(0.05)
assert status == "completed", s
ok("add_message async + get_task_status")

r = c.search_memory("What do I like", user_id=user, conversation_id=conv, memory_limit_number=3)
values = [m.memory_value for m in r.memories]
assert any("strawberry" in v for v in values), values
prefs = [p.preference for p in (r.preferences or [])]
assert any("strawberry" in p for p in prefs), prefs
ok("search_memory")

r = c.search_memory("Where does Ana live?", user_id=user, conversation_id=conv, memory_limit_number=1)
assert "Lisbon" in r.memories[0].memory_value, r
ok("search_memory async-added")

g = c.get_memory(user_id=user, page=1, size=10)
ids = [m.id for m in g.memories]
assert len(ids) >= 2, g
one = c.get_memory_by_id(ids[0])
assert one["data"]["id"] == ids[0], one
ok("get_memory + get_memory_by_id")

kb = c.create_knowledgebase("Handbook", "HR handbook").knowledgebase_id
files = c.add_knowledgebase_file_json(
    kb, [{"file_name": "leave.md", "content": "Employees receive 25 days of paid annual leave."}]
)
assert files.memories[0]["file_name"] == "leave.md", files
r = c.search_memory("How many days of annual leave?", user_id=user, conversation_id=conv,
                    knowledgebase_ids=[kb], memory_limit_number=1)
assert "25 days" in r.memories[0].memory_value, r
ok("knowledge base create + file + search")

with open("travel.md", "w") as fh:
    fh.write("Business trips are booked in economy class for flights under six hours.")
files = c.add_knowledgebase_file_form(kb, ["travel.md"])
assert files.memories[0]["file_name"] == "travel.md", files
r = c.search_memory("Which class for short business flights?", user_id=user, conversation_id=conv,
                    knowledgebase_ids=[kb], memory_limit_number=1)
assert "economy" in r.memories[0].memory_value, r
ok("knowledge base multipart file")

f = c.add_feedback(user_id=user, conversation_id=conv, feedback_content="Actually I prefer raspberries.")
assert f.success, f
ok("add_feedback")

d = c.delete_memory(memory_ids=[ids[0]])
assert d.success, d
try:
    c.get_memory_by_id(ids[0])
    raise AssertionError("deleted memory is still readable")
except AssertionError:
    raise
except Exception:
    pass
ok("delete_memory")

files = c.get_knowledgebase_file(knowledgebase_id=kb)
names = [f.model_dump().get("file_name") for f in files.data.file_detail_list]
assert sorted(names) == ["leave.md", "travel.md"], files
file_id = files.data.file_detail_list[0].model_dump()["file_id"]
assert c.delete_knowledgebase_file([file_id]).code == 0
assert c.get_knowledgebase_file(knowledgebase_id=kb).data.total == 1
ok("get_knowledgebase_file + delete_knowledgebase_file")

assert c.delete_knowledgebase(kb).success
ok("delete_knowledgebase")

r = c.chat(user_id=user, conversation_id=conv, query="What fruit do I like?", add_message_on_answer=False)
assert r.response == "You like strawberries.", r
ok("chat")

events = [json.loads(d) for d in c.chat(user_id=user, conversation_id=conv, query="What fruit do I like?",
                                        stream=True, add_message_on_answer=False)]
assert events[0]["type"] == "reference" and "raspberries" in json.dumps(events[0]["data"]), events
assert "".join(e["data"] for e in events if e["type"] == "text") == "You like strawberries.", events
assert events[-1]["type"] == "end", events
ok("chat stream")
print("SDK OK")
