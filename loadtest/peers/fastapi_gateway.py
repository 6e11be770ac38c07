"""The hand-written alternative to infergate in front of a SageMaker endpoint, kept minimal and
fair: FastAPI on uvicorn (one worker per core), an async HTTP client with keep-alive (aiohttp,
the fastest common one), the same features derived from the same transaction, one
InvokeEndpoint (CSV row) per request.

Run: uvicorn fastapi_gateway:app --workers 2 --port PORT, with ENDPOINT_URL set to the endpoint's
base URL.
"""

import os
from datetime import datetime

import aiohttp
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

ENDPOINT = os.environ.get("ENDPOINT_URL", "http://127.0.0.1:5055") + "/endpoints/fraud-xgb/invocations"
app = FastAPI()
client: aiohttp.ClientSession | None = None


class Transaction(BaseModel):
    transaction_id: str
    card_id: str
    amount: float
    currency: str | None = None
    timestamp: str | None = None
    merchant_category: int
    card_present: bool
    country: str
    home_country: str
    distance_from_home_km: float
    tx_count_1h: int
    tx_count_24h: int
    avg_amount_30d: float
    source_ip: str | None = None


@app.on_event("startup")
async def startup() -> None:
    global client
    client = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))


@app.post("/v1/transactions/score")
async def score(tx: Transaction) -> dict:
    hour = datetime.fromisoformat(tx.timestamp.replace("Z", "+00:00")).hour if tx.timestamp else datetime.utcnow().hour
    row = ",".join(
        str(v)
        for v in (
            tx.amount, tx.amount / max(tx.avg_amount_30d, 1.0), hour, tx.merchant_category,
            int(tx.card_present), int(tx.country != tx.home_country), tx.distance_from_home_km,
            tx.tx_count_1h, tx.tx_count_24h,
        )
    )
    async with client.post(ENDPOINT, data=row + "\n", headers={"content-type": "text/csv"}) as response:
        if response.status != 200:
            raise HTTPException(status_code=503, detail="endpoint failed")
        fraud_score = float((await response.text()).split()[0])
    decision = "decline" if fraud_score >= 0.9 else "review" if fraud_score >= 0.5 else "approve"
    return {"transaction_id": tx.transaction_id, "fraud_score": fraud_score, "decision": decision,
            "model": "fraud-xgb@sagemaker", "cached": False}
